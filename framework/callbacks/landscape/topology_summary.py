"""Scalar summaries of a landscape's 0-dim persistence and merge tree (research note §1.5).

Only pairs with positive persistence count: a zero-length pair is an artefact of exactly tied values (a plateau),
not a basin. Persistence values are reported raw and divided by the loss range (max − min over the grid), because
raw persistence grows with the loss range alone (on the PINN study raw average persistence tracks β with
ρ = +0.95 while the range-normalised value has no trend). Counts are invariant under monotone transforms of the
loss; persistence of log10(loss) is reported too when the loss is positive.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from framework.callbacks.landscape.merge_tree import MINIMUM, SADDLE, SublevelPersistence

__all__ = ["RELATIVE_THRESHOLDS", "TopologySummary", "finite_values", "summarize"]

#: Minima are also counted with persistence above these fractions of the loss range (TTK's simplification threshold).
RELATIVE_THRESHOLDS = (0.01, 0.05)


def finite_values(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace NaN and +inf by the largest finite value and −inf by the smallest (Landscaper's rule).

    Returns the cleaned array (same shape) and the number of replaced entries. Raises when nothing is finite.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    bad = int((~finite).sum())
    if bad == 0:
        return values, 0
    if not finite.any():
        raise ValueError("every loss on the landscape grid is NaN or inf; reduce the range")
    out = values.copy()
    high, low = values[finite].max(), values[finite].min()
    out[np.isnan(values) | (values == np.inf)] = high
    out[values == -np.inf] = low
    return out, bad


@dataclass
class TopologySummary:
    """Summaries of one landscape (see module docstring).

    Attributes:
        neighbour_rule: grid connectivity used.
        n_minima: 1 + number of finite pairs with positive persistence.
        n_saddles: number of distinct merge vertices of those pairs.
        n_pairs: number of finite pairs with positive persistence (= n_minima − 1).
        total_persistence, average_persistence, max_persistence: over those pairs (0 when there are none).
        average_persistence_with_essential: TTK-style mean including the essential pair (global min, global max).
        loss_min, loss_max, loss_range: over the grid.
        total_persistence_normalized, average_persistence_normalized, max_persistence_normalized: divided by range.
        n_minima_above_1pct, n_minima_above_5pct: 1 + pairs with persistence > 1 % / 5 % of the range.
        average_persistence_log10: mean persistence of log10(loss) (``nan`` unless the loss is positive).
        smad, smad_normalized: mean |f(saddle) − f(minimum)| over tree edges from a minimum to a saddle
            (Landscaper's SMAD; 0 without branches), raw and divided by the range.
    """

    neighbour_rule: str
    n_minima: int
    n_saddles: int
    n_pairs: int
    total_persistence: float
    average_persistence: float
    max_persistence: float
    average_persistence_with_essential: float
    loss_min: float
    loss_max: float
    loss_range: float
    total_persistence_normalized: float
    average_persistence_normalized: float
    max_persistence_normalized: float
    n_minima_above_1pct: int
    n_minima_above_5pct: int
    average_persistence_log10: float
    smad: float
    smad_normalized: float

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(diagram: SublevelPersistence) -> TopologySummary:
    """Summaries of ``diagram`` (the output of :func:`~framework.callbacks.landscape.merge_tree.sublevel_persistence`)."""
    persistence = diagram.persistence
    positive = persistence > 0
    p = persistence[positive]
    low, high = diagram.essential_birth, diagram.maximum
    spread = high - low
    scale = spread if spread > 0 else float("nan")
    total = float(p.sum())
    average = float(p.mean()) if len(p) else 0.0
    largest = float(p.max()) if len(p) else 0.0
    with_essential = (total + spread) / (len(p) + 1)
    counts = [1 + int((persistence > tau * spread).sum()) for tau in RELATIVE_THRESHOLDS]
    if low > 0 and len(p):
        pairs = diagram.pairs[positive]
        log_average = float((np.log10(pairs[:, 1]) - np.log10(pairs[:, 0])).mean())
    elif low > 0:
        log_average = 0.0
    else:
        log_average = float("nan")
    tree = diagram.tree
    gaps = [abs(tree.value[tree.parent[i]] - tree.value[i]) for i in range(len(tree.kind))
            if tree.kind[i] == MINIMUM and tree.parent[i] >= 0 and tree.kind[tree.parent[i]] == SADDLE]
    smad = float(np.mean(gaps)) if gaps else 0.0
    return TopologySummary(
        neighbour_rule=diagram.neighbour_rule,
        n_minima=1 + len(p),
        n_saddles=int(len(np.unique(diagram.death_vertex[positive]))),
        n_pairs=len(p),
        total_persistence=total,
        average_persistence=average,
        max_persistence=largest,
        average_persistence_with_essential=with_essential,
        loss_min=low,
        loss_max=high,
        loss_range=spread,
        total_persistence_normalized=total / scale if spread > 0 else 0.0,
        average_persistence_normalized=average / scale if spread > 0 else 0.0,
        max_persistence_normalized=largest / scale if spread > 0 else 0.0,
        n_minima_above_1pct=counts[0],
        n_minima_above_5pct=counts[1],
        average_persistence_log10=log_average,
        smad=smad,
        smad_normalized=smad / scale if spread > 0 and not math.isnan(scale) else 0.0,
    )
