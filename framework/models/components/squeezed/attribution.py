"""Where is the answer lost? Sparse attention in a subset of layers / KV heads only, and needle-key diagnostics.

- `LayerSubsetSelector` wraps a selector so that only the chosen layers (and optionally KV heads) are sparse; every
  other (layer, head) attends the whole fixed context. Served in batched rows (one subset per row), it attributes
  the KL / answer-probability loss of a method to layers or heads.
- `needle_key_report` explains a miss at the level of the needle's keys: for every (layer, KV head), the exact
  attention mass the question puts on the needle's tokens, whether the selector kept them, and the clustering facts
  behind that (size and estimated-score rank of the needle's cluster, its radius, centroid norm vs key norm).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from framework.kernels.squeezed_attention import Selection
from framework.kernels.squeezed_attention.bounded_scores import bounded_cluster_scores_reference
from framework.kernels.squeezed_attention.reference import selection_mask
from framework.models.components.squeezed.layer_index import LayerIndex
from framework.models.components.squeezed.selection_tools import selection_from_mask


class LayerSubsetSelector(nn.Module):
    """Sparse only in `layers` (and only for `kv_heads` if given); all fixed-context keys elsewhere.

    Args:
        inner: the selector under study (`SqueezedAttention` or a baseline).
        layers: layer positions served sparsely.
        kv_heads: KV heads served sparsely in those layers (None: all).
    """

    def __init__(self, inner: nn.Module, *, layers: list[int] | tuple[int, ...], kv_heads=None) -> None:
        super().__init__()
        if not layers:
            raise ValueError("layers must name at least one layer position")
        self.inner = inner
        self.layers = frozenset(int(i) for i in layers)
        self.kv_heads = None if kv_heads is None else frozenset(int(h) for h in kv_heads)
        self.backend = getattr(inner, "backend", "auto")
        self._position: dict[int, int] = {}

    def bind(self, index) -> "LayerSubsetSelector":
        """Remember the index's layer positions; bind the inner selector."""
        bad = sorted(i for i in self.layers if not 0 <= i < len(index.layers))
        if bad:
            raise ValueError(f"layer positions {bad} are outside the index's {len(index.layers)} layers")
        self._position = {id(layer): i for i, layer in enumerate(index.layers)}
        bind = getattr(self.inner, "bind", None)
        if bind is not None:
            bind(index)
        return self

    def _sparse(self, layer: LayerIndex) -> bool:
        if id(layer) not in self._position:
            raise ValueError("LayerSubsetSelector.bind(index) must be called with the served index first")
        return self._position[id(layer)] in self.layers

    def metadata_vectors(self, layer: LayerIndex):
        return self.inner.metadata_vectors(layer) if self._sparse(layer) else 0

    def select(self, query: torch.Tensor, layer: LayerIndex, *, scale: float) -> Selection:
        """Args: query [B, Hq, T, D]. Returns the inner selection here, all N keys elsewhere."""
        b, n, hkv = query.shape[0], layer.num_tokens, layer.keys.shape[1]
        full = torch.ones(b, hkv, n, dtype=torch.bool, device=query.device)
        if not self._sparse(layer):
            return selection_from_mask(full)
        sel = self.inner.select(query, layer, scale=scale)
        if self.kv_heads is None:
            return sel
        mask = selection_mask(sel, n)
        heads = torch.tensor([h in self.kv_heads for h in range(hkv)], device=query.device)
        return selection_from_mask(torch.where(heads.view(1, hkv, 1), mask, full))


def find_subsequence(haystack, needle) -> int:
    """Start of the last occurrence of `needle` in `haystack` (token lists), or -1."""
    h, n = list(haystack), list(needle)
    for start in range(len(h) - len(n), -1, -1):
        if h[start : start + len(n)] == n:
            return start
    return -1


@dataclass
class NeedleKeyStats:
    """Per (layer, KV head) facts about the needle's keys (answer-digit tokens in the context).

    Attributes (each [L, Hkv] fp32 unless noted):
        needle_mass: exact attention mass of the question's queries on the needle keys (mean over T and G).
        kept: fraction of needle keys the selector kept.
        cluster_size: mean size of the needle keys' clusters.
        score_rank: mean rank (0 = best) of the needle keys' clusters by the selector's estimated score, / C.
        radius: mean radius of those clusters.
        key_norm: mean norm of the needle keys; centroid_norm: mean norm of their centroids;
        mean_key_norm: mean norm of all clustered keys.
        mass_recall: exact attention mass (over all fixed-context keys) on the kept keys, mean over T and G.
    """

    needle_mass: torch.Tensor
    kept: torch.Tensor
    cluster_size: torch.Tensor
    score_rank: torch.Tensor
    radius: torch.Tensor
    key_norm: torch.Tensor
    centroid_norm: torch.Tensor
    mean_key_norm: torch.Tensor
    mass_recall: torch.Tensor


@torch.no_grad()
def needle_key_report(
    index, queries: list[torch.Tensor], positions: list[int], selector: nn.Module, *, scale: float
) -> NeedleKeyStats:
    """Needle-key diagnostics of `selector` on the question's dense queries.

    Args:
        index: `FixedContextIndex` (its clustering is the one `selector` uses).
        queries: per layer [1, Hq, T, D] post-RoPE queries of the question (captured in a dense pass).
        positions: fixed-context positions of the needle's keys (must be clustered positions).
        selector: bound selector with `select(query, layer, scale)`.
        scale: softmax scale.
    """
    n_layers, hkv = len(index.layers), index.layers[0].keys.shape[1]
    out = {k: torch.zeros(n_layers, hkv) for k in NeedleKeyStats.__dataclass_fields__}
    pos = torch.tensor(positions)
    for li, layer in enumerate(index.layers):
        q = queries[li].float()
        b, hq, t, d = q.shape
        g = hq // hkv
        keys = layer.keys[0].float()  # [Hkv, N, D]
        logits = torch.einsum("bhtd,hnd->bhtn", q, keys.repeat_interleave(g, 0)) * scale
        probs = torch.softmax(logits, -1).reshape(b, hkv, g * t, -1).mean(2)[0]  # [Hkv, N]
        mask = selection_mask(selector.select(q, layer, scale=scale), layer.num_tokens)[0]  # [Hkv, N]
        s = layer.attention_sinks
        rel = pos - s
        inside = (rel >= 0) & (rel < layer.num_clustered)
        rel = rel[inside]
        scores = bounded_cluster_scores_reference(q, layer.centroids, layer.cluster_sizes, scale)[0]  # [Hkv, C]
        rank = torch.argsort(torch.argsort(scores, -1, descending=True), -1).float() / scores.shape[-1]
        radii = layer.cluster_radii()
        for h in range(hkv):
            out["needle_mass"][li, h] = probs[h, pos].sum()
            out["kept"][li, h] = mask[h, pos].float().mean()
            if rel.numel():
                lab = layer.key_labels[h, rel]
                out["cluster_size"][li, h] = layer.cluster_sizes[h, lab].float().mean()
                out["score_rank"][li, h] = rank[h, lab].mean()
                out["radius"][li, h] = radii[h, lab].mean()
                out["centroid_norm"][li, h] = layer.centroids[h, lab].norm(dim=-1).mean()
            out["key_norm"][li, h] = keys[h, pos].norm(dim=-1).mean()
            out["mean_key_norm"][li, h] = keys[h, s : s + layer.num_clustered].norm(dim=-1).mean()
            out["mass_recall"][li, h] = (probs[h] * mask[h]).sum()
    return NeedleKeyStats(**out)
