"""Per-layer budgets from calibration (ours; issue 21, item 3): spend a model's key budget where the answer needs it.

Attribution (docs/results.md, "Where the answer is lost") showed that sparse attention costs the answer very
unevenly over the layers: SmolLM2's layers 0-4 keep only ~72 % of their attention mass at budget 0.125 and lose
nothing, layers 5-9 alone lose more than all layers together. A uniform budget therefore over-serves some layers and
starves others. Here the budget is allocated per group of layers from a *calibration* of that sensitivity, made
once per model on contexts used for nothing else:

1. for every layer group g and budget multiplier m (e.g. 0.5 .. 2 x the target), serve g alone at m x target (the
   other layers dense) and measure the loss L_g(m) (next-token KL to dense on answer tokens, averaged over
   calibration questions) — `LayerSubsetSelector` rows;
2. `allocate_group_multipliers` picks one multiplier per group minimising sum_g L_g(m_g) with the layer-weighted
   mean multiplier <= 1 — the same mean budget, hence the same measured budget — an exact dynamic programme
   (the additive-loss model is the approximation; the evaluation's validation split judges it);
3. `PerLayerSelector` serves layer i with its own selector at budget b_i.

The first attempt at a per-head allocation (`ProductQuantizedTopK(head_allocation="mass")`) maximised estimated
attention mass and lost needles although it kept more mass; this one optimises the measured answer loss instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from framework.kernels.squeezed_attention import Selection
from framework.models.components.squeezed.layer_index import LayerIndex

# Multipliers are compared after rounding to this many units of 1 (exact for two-decimal multipliers and the
# integer layer counts of a group).
_UNITS = 1000


def allocate_group_multipliers(
    losses: Mapping[str, Mapping[float, float]], sizes: Mapping[str, int], *, mean: float = 1.0
) -> dict[str, float]:
    """One budget multiplier per layer group minimising the summed loss at a layer-weighted mean <= `mean`.

    Args:
        losses: group name -> {multiplier: calibrated loss L_g(m)} (finite, one entry per candidate multiplier).
        sizes: group name -> layers in the group (>= 1); same keys as `losses`.
        mean: bound on sum_g sizes[g] * m_g / sum_g sizes[g].

    Returns:
        group name -> chosen multiplier. Among allocations of equal total loss, the one closest to uniform
        (smallest sum_g sizes[g] * |m_g - 1|) wins, so a flat calibration keeps the uniform budget.

    Raises:
        ValueError: on mismatched groups, empty or non-finite losses, non-positive sizes or multipliers, or when no
            allocation meets the mean.
    """
    if set(losses) != set(sizes) or not losses:
        raise ValueError(f"losses and sizes must name the same non-empty groups, got {sorted(losses)} / {sorted(sizes)}")
    for g, table in losses.items():
        if not table:
            raise ValueError(f"group {g!r} has no candidate multipliers")
        if not isinstance(sizes[g], int) or isinstance(sizes[g], bool) or sizes[g] < 1:
            raise ValueError(f"group {g!r}: size must be an int >= 1, got {sizes[g]!r}")
        for m, loss in table.items():
            if not m > 0 or not math.isfinite(float(loss)):
                raise ValueError(f"group {g!r}: multiplier {m!r} must be > 0 with a finite loss, got loss {loss!r}")
    total_layers = sum(sizes.values())
    cap = round(mean * total_layers * _UNITS)
    # Dynamic programme over groups: units used -> (loss, distance from uniform, choices). States with the same
    # units keep only the best (loss, distance); exact because the objective and the constraint are additive.
    states: dict[int, tuple[float, float, tuple[float, ...]]] = {0: (0.0, 0.0, ())}
    names = sorted(losses)
    for g in names:
        nxt: dict[int, tuple[float, float, tuple[float, ...]]] = {}
        for used, (loss, dist, picks) in states.items():
            for m, lm in sorted(losses[g].items()):
                units = used + round(m * sizes[g] * _UNITS)
                if units > cap:
                    continue
                cand = (loss + float(lm), dist + sizes[g] * abs(m - 1.0), picks + (float(m),))
                if units not in nxt or cand[:2] < nxt[units][:2]:
                    nxt[units] = cand
        states = nxt
        if not states:
            raise ValueError(f"no allocation of the candidate multipliers has a layer-weighted mean <= {mean}")
    best = min(states.values(), key=lambda s: (s[0], s[1]))
    return dict(zip(names, best[2]))


def layer_budgets(groups: Mapping[str, Sequence[int]], multipliers: Mapping[str, float], target: float) -> list[float]:
    """Per-layer total budgets target * m_g(i), in layer order (every layer in exactly one group).

    Raises:
        ValueError: when the groups do not partition 0 .. L-1, or a budget leaves (0, 1].
    """
    owner: dict[int, str] = {}
    for g, layers in groups.items():
        for i in layers:
            if i in owner:
                raise ValueError(f"layer {i} is in groups {owner[i]!r} and {g!r}")
            owner[i] = g
    if sorted(owner) != list(range(len(owner))):
        raise ValueError(f"groups must cover layers 0 .. L-1 exactly, got {sorted(owner)}")
    out = [target * multipliers[owner[i]] for i in range(len(owner))]
    bad = [(i, b) for i, b in enumerate(out) if not 0.0 < b <= 1.0]
    if bad:
        raise ValueError(f"per-layer budgets must be in (0, 1], got {bad}")
    return out


class PerLayerSelector(nn.Module):
    """Layer i of the served index selected by `selectors[i]` (e.g. one `ProductQuantizedTopK` per layer budget).

    Args:
        selectors: one selector per layer of the index it will serve, in layer order.
    """

    def __init__(self, selectors: Sequence[nn.Module]) -> None:
        super().__init__()
        if not selectors:
            raise ValueError("PerLayerSelector needs one selector per layer, got none")
        self.selectors = nn.ModuleList(selectors)
        self.backend = getattr(selectors[0], "backend", "auto")
        self._position: dict[int, int] = {}

    @property
    def budget(self) -> float:
        """Mean of the layers' target budgets (what the measured budget averages to)."""
        return sum(float(s.budget) for s in self.selectors) / len(self.selectors)

    def bind(self, index) -> "PerLayerSelector":
        """Remember the index's layer positions (it must have one layer per selector); bind the inner selectors."""
        if len(index.layers) != len(self.selectors):
            raise ValueError(f"{len(self.selectors)} per-layer selectors for an index of {len(index.layers)} layers")
        self._position = {id(layer): i for i, layer in enumerate(index.layers)}
        for sel in self.selectors:
            bind = getattr(sel, "bind", None)
            if bind is not None:
                bind(index)
        return self

    def _selector(self, layer: LayerIndex) -> nn.Module:
        if id(layer) not in self._position:
            raise ValueError("PerLayerSelector.bind(index) must be called with the served index first")
        return self.selectors[self._position[id(layer)]]

    def metadata_vectors(self, layer: LayerIndex):
        """The layer's own selector's metadata."""
        return self._selector(layer).metadata_vectors(layer)

    def select(self, query: torch.Tensor, layer: LayerIndex, *, scale: float) -> Selection:
        """Args: query [B, Hq, T, D]. Returns the layer's own selector's `Selection`."""
        return self._selector(layer).select(query, layer, scale=scale)

    def extra_repr(self) -> str:
        return "budgets=[" + ", ".join(f"{float(s.budget):.4g}" for s in self.selectors) + "]"
