"""From per-layer metrics to per-layer sparsities (AlphaPruning's ``ww_sparsity``, with clipping).

For metrics q_i, parameter counts n_i, target global sparsity S and spread ε (relative, in [0, 1))::

    q_i ← mean of q over i's block                                   (block-wise mapping only)
    r_i = (1 − ε) + 2ε (q_i − q_min) / (q_max − q_min)               (r ∈ [1 − ε, 1 + ε])
    s_i = S · r_i · Σ_j n_j / Σ_j n_j r_j                            (parameter-weighted mean exactly S)

so s_max / s_min = (1 + ε) / (1 − ε). The public code stops here and can return s_i > 1 (LLaMA-7B, S = 0.8, ε = 0.3
gives 1.063). We then clip to [0, ``max_sparsity``] and keep the weighted mean at S by moving the excess onto the
unclipped layers proportionally to their r_i (water-filling: repeat until nothing new is clipped), which preserves
the order of the ratios. Equal metrics (q_max = q_min) give every layer S.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Allocation", "allocate", "metric_values_with_fallback"]


@dataclass(frozen=True)
class Allocation:
    """Per-layer sparsities keyed by layer name.

    Attributes:
        sparsities: clipped sparsity of each layer (what gets pruned).
        unclipped: the formula's sparsities before clipping (may leave [0, 1]).
        metrics: the metric each layer was allocated from (after block averaging).
        target_sparsity: S; ``sum(n_i s_i) / sum(n_i) == S`` up to rounding.
        epsilon: ε.
        clipped: names of layers that hit a bound.
        blocks: block index of each layer (``None`` for layer-wise allocation).
    """

    sparsities: dict[str, float]
    unclipped: dict[str, float]
    metrics: dict[str, float]
    target_sparsity: float
    epsilon: float
    clipped: list[str] = field(default_factory=list)
    blocks: dict[str, int] | None = None

    def weighted_mean(self, sizes: Mapping[str, int]) -> float:
        """Parameter-weighted mean of the clipped sparsities."""
        total = sum(sizes[name] for name in self.sparsities)
        return sum(sizes[name] * s for name, s in self.sparsities.items()) / total


def _check_fraction(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")


def metric_values_with_fallback(values: Mapping[str, float]) -> tuple[dict[str, float], list[str]]:
    """Replace NaN / infinite metrics (layers too small to fit) by the median of the finite ones.

    Returns ``(values, names that fell back)``; with no finite value at all, every layer gets 1.0 (uniform).
    """
    finite = sorted(v for v in values.values() if math.isfinite(v))
    fallback_names = [name for name, v in values.items() if not math.isfinite(v)]
    if not finite:
        return {name: 1.0 for name in values}, fallback_names
    mid = len(finite) // 2
    median = finite[mid] if len(finite) % 2 else 0.5 * (finite[mid - 1] + finite[mid])
    return {name: (v if math.isfinite(v) else median) for name, v in values.items()}, fallback_names


def _clip_keep_mean(
    ratios: dict[str, float], sizes: Mapping[str, int], target: float, upper: float
) -> tuple[dict[str, float], list[str]]:
    """Scale ``ratios`` to mean ``target`` with every value in [0, upper], water-filling the clipped excess."""
    total = sum(sizes.values())
    fixed: dict[str, float] = {}
    for _ in range(len(ratios) + 1):
        free = [n for n in ratios if n not in fixed]
        budget = target * total - sum(sizes[n] * s for n, s in fixed.items())
        free_mass = sum(sizes[n] * ratios[n] for n in free)
        if not free or free_mass <= 0:
            break
        scale = budget / free_mass
        over = [n for n in free if ratios[n] * scale > upper]
        if not over:
            result = {**{n: ratios[n] * scale for n in free}, **fixed}
            return {n: result[n] for n in ratios}, [n for n in ratios if n in fixed]  # model order
        for n in over:
            fixed[n] = upper
    # Every layer is at the bound (only possible when target == upper).
    return {n: fixed.get(n, upper) for n in ratios}, [n for n in ratios if n in fixed]


def allocate(
    metrics: Mapping[str, float],
    sizes: Mapping[str, int],
    *,
    target_sparsity: float,
    epsilon: float,
    blocks: Mapping[str, int] | Sequence[Sequence[str]] | None = None,
    max_sparsity: float = 1.0,
) -> Allocation:
    """Per-layer sparsities from per-layer metrics (larger metric → more sparsity).

    Args:
        metrics: layer name → metric value (finite; see :func:`metric_values_with_fallback`).
        sizes: layer name → number of prunable parameters (same keys).
        target_sparsity: S in [0, 1): the parameter-weighted mean sparsity.
        epsilon: ε in [0, 1): relative spread, s_max / s_min = (1 + ε) / (1 − ε) before clipping.
        blocks: block-wise mapping — either layer name → block id, or a list of lists of names; every layer must be
            in exactly one block. ``None`` → layer-wise.
        max_sparsity: upper clip (≤ 1); :func:`~framework.callbacks.pruning.prune_model.alpha_prune` and the callback
            default to 0.99 so that no matrix is zeroed whole.

    Returns:
        An :class:`Allocation`.
    """
    _check_fraction("target_sparsity", target_sparsity)
    _check_fraction("epsilon", epsilon)
    if not 0.0 < max_sparsity <= 1.0 or max_sparsity < target_sparsity:
        raise ValueError(f"max_sparsity must lie in [target_sparsity, 1], got {max_sparsity!r}")
    if not metrics:
        raise ValueError("allocate needs at least one layer, got no metrics")
    if set(metrics) != set(sizes):
        missing = sorted(set(metrics) ^ set(sizes))
        raise ValueError(f"metrics and sizes must have the same layer names; differing: {missing[:5]}")
    bad = {n: v for n, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise ValueError(f"metrics must be finite, got {dict(list(bad.items())[:5])}")
    if any(int(n) <= 0 for n in sizes.values()):
        raise ValueError("every layer size must be positive")

    block_of: dict[str, int] | None = None
    values = dict(metrics)
    if blocks is not None:
        if isinstance(blocks, Mapping):
            block_of = {name: int(b) for name, b in blocks.items()}
        else:
            block_of = {name: b for b, group in enumerate(blocks) for name in group}
        unassigned = sorted(set(metrics) - set(block_of))
        if unassigned:
            raise ValueError(f"block-wise allocation: layers not in any block: {unassigned[:5]}")
        members: dict[int, list[str]] = {}
        for name in metrics:
            members.setdefault(block_of[name], []).append(name)
        block_mean = {b: sum(metrics[n] for n in names) / len(names) for b, names in members.items()}
        values = {name: block_mean[block_of[name]] for name in metrics}
        block_of = {name: block_of[name] for name in metrics}

    low, high = min(values.values()), max(values.values())
    if high - low <= 1e-12 * max(1.0, abs(high)):
        ratios = {name: 1.0 for name in values}
    else:
        ratios = {name: (1 - epsilon) + 2 * epsilon * (v - low) / (high - low) for name, v in values.items()}
    total = sum(sizes[n] for n in values)
    weighted = sum(sizes[n] * ratios[n] for n in values)
    unclipped = {name: target_sparsity * r * total / weighted for name, r in ratios.items()}
    sparsities, clipped = _clip_keep_mean(ratios, {n: sizes[n] for n in values}, target_sparsity, max_sparsity)
    if clipped:
        shown = ", ".join(clipped[:20]) + (f", ... ({len(clipped) - 20} more)" if len(clipped) > 20 else "")
        warnings.warn(
            f"allocation: {len(clipped)} layer(s) hit the cap max_sparsity={max_sparsity} (the formula gave up to "
            f"{max(unclipped.values()):.4f}) and were clipped: {shown}; their excess was moved to the other layers "
            f"so the mean stays {target_sparsity}",
            stacklevel=2,
        )
    return Allocation(
        sparsities=sparsities, unclipped=unclipped, metrics=values, target_sparsity=float(target_sparsity),
        epsilon=float(epsilon), clipped=clipped, blocks=block_of,
    )
