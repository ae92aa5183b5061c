"""Cluster-contiguous storage of the fixed-context K/V (our design; the paper gathers keys by per-token index).

Built once per fixed context after clustering. Per KV head, keys are stored cluster by cluster (each cluster's keys
in original order), always-kept keys (observation window) last. A selection of clusters is then a set of contiguous
runs: the lookup expands selected clusters from ``cluster_offsets`` without reading per-key labels, and the sparse
attention kernels load runs of consecutive rows.
"""

from __future__ import annotations

import torch

from .results import ClusterLayout
from .validation import check_always_keep, check_labels, check_rank

__all__ = ["cluster_contiguous_layout", "unpermute_indices"]


def cluster_contiguous_layout(
    k: torch.Tensor,
    v: torch.Tensor,
    key_labels: torch.Tensor,
    num_clusters: int,
    *,
    always_keep: torch.Tensor | None = None,
) -> ClusterLayout:
    """Permute K/V so that every cluster is a contiguous run.

    Args:
        k, v: ``[B, Hkv, N, D]`` fixed-context keys / values (B = 1 for a context shared by a batch).
        key_labels: ``[Hkv, N]`` cluster id of every key (e.g. ``KMeansResult.labels``; keys of the observation
            window may carry any valid id, they are moved to the always-kept tail).
        num_clusters: C.
        always_keep: ``[N]`` or ``[Hkv, N]`` bool, keys always attended; must hold the same count on every head.

    Returns:
        :class:`ClusterLayout`; use ``layout.k``, ``layout.v`` in ``sparse_attention`` and pass ``layout`` to the
        lookup. Selected indices then refer to the permuted positions (``layout.permutation`` maps them back).
    """
    check_rank("k", k, 4, "[B, Hkv, N, D]")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v shape {tuple(v.shape)} must match k shape {tuple(k.shape)} in B, Hkv, N")
    b, hkv, n, d = k.shape
    if check_labels(key_labels, hkv) != n:
        raise ValueError(f"key_labels cover {key_labels.shape[1]} keys but k has N={n}")
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, int) or num_clusters < 1:
        raise ValueError(f"num_clusters must be an int >= 1, got {num_clusters!r}")
    check_always_keep(always_keep, hkv, n)
    labels = key_labels.long().to(k.device)
    if bool(((labels < 0) | (labels >= num_clusters)).any()):
        raise ValueError(f"key_labels must lie in [0, num_clusters={num_clusters})")
    always = (
        torch.zeros(hkv, n, dtype=torch.bool, device=k.device)
        if always_keep is None
        else always_keep.to(k.device).expand(hkv, n)
    )
    per_head = always.sum(1)
    num_always = int(per_head[0].item())
    if bool((per_head != num_always).any()):
        raise ValueError(f"always_keep must hold the same number of keys on every head, got {per_head.tolist()}")
    sort_key = torch.where(always, torch.full_like(labels, num_clusters), labels)
    perm = torch.argsort(sort_key, dim=1, stable=True)  # [Hkv, N]
    counts = torch.zeros(hkv, num_clusters + 1, dtype=torch.long, device=k.device)
    counts.scatter_add_(1, sort_key, torch.ones_like(sort_key))
    offsets = torch.zeros(hkv, num_clusters + 1, dtype=torch.int32, device=k.device)
    offsets[:, 1:] = torch.cumsum(counts[:, :num_clusters], dim=1).to(torch.int32)
    gather = perm[None, :, :, None].expand(b, hkv, n, d)
    return ClusterLayout(
        k=k.gather(2, gather),
        v=v.gather(2, perm[None, :, :, None].expand(b, hkv, n, v.shape[-1])),
        key_labels=labels.gather(1, perm),
        permutation=perm,
        cluster_offsets=offsets,
        always_keep=always.gather(1, perm),
        num_always=num_always,
    )


def unpermute_indices(layout: ClusterLayout, key_indices: torch.Tensor) -> torch.Tensor:
    """Map ``[B, Hkv, K]`` indices into the permuted keys back to original key positions (int64)."""
    b = key_indices.shape[0]
    perm = layout.permutation[None].expand(b, -1, -1)
    return perm.gather(2, key_indices.long())
