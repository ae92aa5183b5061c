"""Baseline key selectors at a given budget, producing the same `Selection` so the same sparse kernel serves them.

Every selector picks exactly `round(key_fraction * N)` fixed-context keys per (batch row, KV head), where
`key_fraction = budget - metadata_vectors / (2N)` (its own metadata is charged to the budget, as Squeezed Attention's
centroids are, §3.7). Like Squeezed Attention, one selection is shared by the T queries and the G query heads of a
KV group; per-query scores are turned into probabilities and averaged over those queries (our aggregation rule).

- `OracleTopK`: the keys with the largest exact attention probability (ceiling for any selector; no metadata).
- `QuestPages`: Quest (Tang et al., ICML 2024): pages of 16 consecutive keys with channel-wise min/max; the page's
  upper bound sum_c max(q_c min_c, q_c max_c) ranks pages; metadata = 2 key-sized vectors per page.
- `SlidingWindowSinks`: the first `sinks` keys (attention sinks) and the most recent keys of the context.
- `RandomKeys`: a uniform random subset (seeded).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from framework.kernels.squeezed_attention import Selection
from framework.models.components.squeezed.layer_index import LayerIndex
from framework.models.components.squeezed.selection_tools import selection_from_indices


def _check_budget(budget: float) -> float:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not (0.0 < float(budget) <= 1.0):
        raise ValueError(f"budget must be in (0, 1], got {budget!r}")
    return float(budget)


class BudgetedSelector(nn.Module):
    """Common part of the baselines: budget validation and the key count per head.

    Args:
        budget: total budget in (0, 1] (kept keys / N + own metadata / 2N).
    """

    def __init__(self, *, budget: float) -> None:
        super().__init__()
        self.budget = _check_budget(budget)
        self.backend = "auto"

    def metadata_vectors(self, layer: LayerIndex) -> int:
        """Key-sized metadata vectors per KV head read by one selection."""
        return 0

    def num_keys(self, layer: LayerIndex) -> int:
        """Keys per (batch row, KV head): round((budget - metadata / 2N) * N), at least 1 and at most N."""
        n = layer.num_tokens
        key_fraction = self.budget - self.metadata_vectors(layer) / (2.0 * n)
        return int(min(n, max(1, round(key_fraction * n))))

    def extra_repr(self) -> str:
        return f"budget={self.budget}"


def _group_probabilities(query: torch.Tensor, keys: torch.Tensor, scale: float) -> torch.Tensor:
    """[B, Hkv, N] exact softmax probabilities over the fixed keys, averaged over T queries and the G heads."""
    b, hq, t, d = query.shape
    hkv = keys.shape[1]
    g = hq // hkv
    q = query.float().reshape(b, hkv, g * t, d)
    scores = torch.matmul(q, keys.float().transpose(-1, -2)) * scale  # [B, Hkv, G*T, N]
    return torch.softmax(scores, dim=-1).mean(dim=2)


class OracleTopK(BudgetedSelector):
    """Top keys by the true attention probability (averaged over the group's queries)."""

    def select(self, query: torch.Tensor, layer: LayerIndex, *, scale: float) -> Selection:
        """Args: query [B, Hq, T, D]. Returns a `Selection` of exactly `num_keys` keys per (B, Hkv)."""
        keys = layer.keys.to(query.device)
        probs = _group_probabilities(query, keys.expand(query.shape[0], -1, -1, -1), scale)
        top = torch.topk(probs, self.num_keys(layer), dim=-1).indices
        return selection_from_indices(top)


class QuestPages(BudgetedSelector):
    """Quest page selection: pages ranked by the min/max upper bound of q·k.

    Args:
        budget: total budget in (0, 1].
        page_size: keys per page (Quest uses 16).
    """

    def __init__(self, *, budget: float, page_size: int = 16) -> None:
        super().__init__(budget=budget)
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"page_size must be an int >= 1, got {page_size!r}")
        self.page_size = page_size
        self._bounds: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def metadata_vectors(self, layer: LayerIndex) -> int:
        return 2 * math.ceil(layer.num_tokens / self.page_size)

    def page_bounds(self, layer: LayerIndex) -> tuple[torch.Tensor, torch.Tensor]:
        """([Hkv, P, D] channel-wise min, [Hkv, P, D] max) of each page's keys (cached per layer)."""
        key = id(layer.keys)
        # The entry keeps a reference to the keys tensor, so its id cannot be reused by another tensor meanwhile.
        if key not in self._bounds or self._bounds[key][0] is not layer.keys:
            k = layer.keys[0].float()  # [Hkv, N, D]
            h, n, d = k.shape
            p = math.ceil(n / self.page_size)
            pad = p * self.page_size - n
            lo = torch.nn.functional.pad(k, (0, 0, 0, pad), value=float("inf")).reshape(h, p, self.page_size, d)
            hi = torch.nn.functional.pad(k, (0, 0, 0, pad), value=float("-inf")).reshape(h, p, self.page_size, d)
            self._bounds[key] = (layer.keys, lo.amin(2), hi.amax(2))
        return self._bounds[key][1], self._bounds[key][2]

    def select(self, query: torch.Tensor, layer: LayerIndex, *, scale: float) -> Selection:
        """Args: query [B, Hq, T, D]. Returns a `Selection` of exactly `num_keys` keys per (B, Hkv)."""
        lo, hi = self.page_bounds(layer)
        lo, hi = lo.to(query.device), hi.to(query.device)
        b, hq, t, d = query.shape
        hkv, p = lo.shape[0], lo.shape[1]
        g = hq // hkv
        q = query.float().reshape(b, hkv, g * t, 1, d)
        bound = torch.maximum(q * lo.unsqueeze(0).unsqueeze(2), q * hi.unsqueeze(0).unsqueeze(2)).sum(-1) * scale
        page_score = torch.softmax(bound, dim=-1).mean(dim=2)  # [B, Hkv, P]
        n = layer.num_tokens
        want = self.num_keys(layer)
        pages = torch.argsort(page_score, dim=-1, descending=True)  # [B, Hkv, P]
        # Keys of pages in rank order; the last page taken is truncated so exactly `want` keys are kept.
        offs = torch.arange(self.page_size, device=query.device)
        keys_in_order = (pages.unsqueeze(-1) * self.page_size + offs).reshape(b, hkv, p * self.page_size)
        valid = keys_in_order < n
        # Drop padding positions of the last (partial) page while keeping rank order.
        order = torch.sort((~valid).to(torch.int8), dim=-1, stable=True).indices
        ranked = keys_in_order.gather(-1, order)[..., :want]
        return selection_from_indices(ranked)


class SlidingWindowSinks(BudgetedSelector):
    """StreamingLLM-style: the first `sinks` keys plus the last keys of the fixed context.

    Args:
        budget: total budget in (0, 1].
        sinks: attention-sink tokens kept at the start (StreamingLLM uses 4).
    """

    def __init__(self, *, budget: float, sinks: int = 4) -> None:
        super().__init__(budget=budget)
        if isinstance(sinks, bool) or not isinstance(sinks, int) or sinks < 0:
            raise ValueError(f"sinks must be an int >= 0, got {sinks!r}")
        self.sinks = sinks

    def select(self, query: torch.Tensor, layer: LayerIndex, *, scale: float) -> Selection:
        """Args: query [B, Hq, T, D]. Returns a `Selection` of exactly `num_keys` keys per (B, Hkv)."""
        n, want = layer.num_tokens, self.num_keys(layer)
        sinks = min(self.sinks, want)
        idx = torch.cat(
            [torch.arange(sinks, device=query.device), torch.arange(n - (want - sinks), n, device=query.device)]
        )
        b, hkv = query.shape[0], layer.keys.shape[1]
        return selection_from_indices(idx.view(1, 1, -1).expand(b, hkv, -1))


class RandomKeys(BudgetedSelector):
    """A uniform random subset of the fixed-context keys (fresh per call, from a seeded generator).

    Args:
        budget: total budget in (0, 1].
        seed: generator seed.
    """

    def __init__(self, *, budget: float, seed: int = 0) -> None:
        super().__init__(budget=budget)
        self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    def select(self, query: torch.Tensor, layer: LayerIndex, *, scale: float) -> Selection:
        """Args: query [B, Hq, T, D]. Returns a `Selection` of exactly `num_keys` keys per (B, Hkv)."""
        n, want = layer.num_tokens, self.num_keys(layer)
        b, hkv = query.shape[0], layer.keys.shape[1]
        noise = torch.rand(b, hkv, n, generator=self._generator)
        idx = torch.topk(noise, want, dim=-1).indices.to(query.device)
        return selection_from_indices(idx)


class RowwiseSelector(nn.Module):
    """Different selectors for different batch rows, so several methods run in one batched forward.

    Row b of the batch (the same user input repeated) is served by `selectors[b]`, each over its own index's
    clustering (`indexes[b]`, or the served index when None); all indexes must share the fixed-context KV.

    Args:
        selectors: one selector per batch row.
        indexes: one `FixedContextIndex` (or None) per row.
    """

    def __init__(self, selectors: list[nn.Module], indexes: list | None = None) -> None:
        super().__init__()
        if not selectors:
            raise ValueError("RowwiseSelector needs at least one selector")
        if indexes is not None and len(indexes) != len(selectors):
            raise ValueError(f"{len(indexes)} indexes for {len(selectors)} selectors")
        self.selectors = nn.ModuleList(selectors)
        self.indexes = list(indexes) if indexes is not None else [None] * len(selectors)
        self.backend = getattr(selectors[0], "backend", "auto")
        self._position: dict[int, int] = {}

    def bind(self, index) -> "RowwiseSelector":
        """Bind every row's selector to its index; remember layer positions of the served index."""
        self._position = {id(layer): i for i, layer in enumerate(index.layers)}
        for i, (sel, own) in enumerate(zip(self.selectors, self.indexes)):
            own = index if own is None else own
            if own.metadata.context_fingerprint != index.metadata.context_fingerprint:
                raise ValueError(f"row {i}: its index was built for another fixed context than the served one")
            self.indexes[i] = own
            bind = getattr(sel, "bind", None)
            if bind is not None:
                bind(own)
        return self

    def row_layer(self, row: int, layer: LayerIndex) -> LayerIndex:
        """Row `row`'s own `LayerIndex` at the position of the served index's `layer`."""
        return self.indexes[row].layers[self._position[id(layer)]]

    def metadata_vectors(self, layer: LayerIndex) -> list[int]:
        """Per row: the metadata vectors of that row's selector."""
        return [sel.metadata_vectors(self.row_layer(i, layer)) for i, sel in enumerate(self.selectors)]

    def select(self, query: torch.Tensor, layer: LayerIndex, *, scale: float) -> Selection:
        """Args: query [B, Hq, T, D] with B == number of selectors. Returns the rows' selections stacked."""
        if query.shape[0] != len(self.selectors):
            raise ValueError(f"batch has {query.shape[0]} rows but {len(self.selectors)} selectors were given")
        parts = [
            sel.select(query[i : i + 1], self.row_layer(i, layer), scale=scale) for i, sel in enumerate(self.selectors)
        ]
        k_max = max(p.key_indices.shape[-1] for p in parts)
        indices = torch.cat(
            [torch.nn.functional.pad(p.key_indices, (0, k_max - p.key_indices.shape[-1])) for p in parts]
        )
        counts = torch.cat([p.key_counts for p in parts])
        return Selection(
            key_indices=indices,
            key_counts=counts,
            cluster_scores=torch.zeros(len(parts), indices.shape[1], 0, device=indices.device),
        )
