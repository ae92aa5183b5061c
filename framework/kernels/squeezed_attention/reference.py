"""Pure-PyTorch references of every Squeezed Attention op (fp32 accumulation, loops over KV heads to bound memory).

They define the semantics the Triton kernels are tested against, and they are the CPU path of ``ops.py``.

Cluster score (arXiv:2411.09688 Sec. 3, notes §3.2): for query row i and centroid j of a KV head,
``A_ij = scale * q_i . c_j``, ``Z_i = sum_j n_j exp(A_ij)``, ``P_ij = exp(A_ij) / Z_i``; the score of cluster j is
the mean of ``P_ij`` over the T queries and the G query heads of the KV group (computed in log space, so large
logits cannot overflow and empty clusters cannot divide 0 by 0).

Selection semantics (shared by every backend):
- threshold: keep the keys of clusters whose score is ``> threshold`` (strict), plus ``always_keep`` keys.
- budget: ``K = ceil(budget * N)`` keys. Always-kept keys are taken first; the rest of K is filled by clusters in
  order of descending score (ties: lower cluster id first), cutting the last cluster needed to its lowest-indexed
  keys, so exactly ``max(K, num_always)`` keys are kept (fewer only if a hierarchical first level pruned so much
  that fewer keys survive).
- hierarchical: clusters whose coarse parent scored ``<= coarse_threshold`` are dead: they leave the estimated
  softmax denominator (sizes recounted over survivors) and none of their keys is kept.
"""

from __future__ import annotations

import torch

from .results import AttentionResult, Selection
from .validation import budget_to_count

__all__ = [
    "cluster_scores_reference",
    "select_from_scores_reference",
    "centroid_lookup_reference",
    "hierarchical_lookup_reference",
    "masked_attention_reference",
    "sparse_attention_reference",
    "dense_attention_reference",
    "merge_attention_reference",
    "selection_mask",
]


def cluster_scores_reference(
    q: torch.Tensor,
    centroids: torch.Tensor,
    cluster_sizes: torch.Tensor,
    scale: float,
    alive: torch.Tensor | None = None,
) -> torch.Tensor:
    """Estimated cluster probabilities.

    Args:
        q: ``[B, Hq, T, D]`` queries.
        centroids: ``[Hkv, C, D]``.
        cluster_sizes: ``[Hkv, C]`` keys per cluster (the ``n_j`` weights of the estimated denominator).
        scale: softmax scale.
        alive: optional ``[B, Hkv, C]`` bool; dead clusters leave the denominator and score 0.
            Empty clusters (size 0) score 0 too.

    Returns:
        ``[B, Hkv, C]`` fp32 scores.
    """
    b, hq, t, d = q.shape
    hkv, c, _ = centroids.shape
    g = hq // hkv
    out = torch.empty(b, hkv, c, dtype=torch.float32, device=q.device)
    for h in range(hkv):
        qh = q[:, h * g : (h + 1) * g].float()  # [B, G, T, D]
        logits = torch.einsum("bgtd,cd->bgtc", qh, centroids[h].float()) * scale  # [B, G, T, C]
        log_n = torch.log(cluster_sizes[h].float()).expand(b, c)  # [B, C], -inf for empty clusters
        if alive is not None:
            log_n = log_n.masked_fill(~alive[:, h], float("-inf"))
        log_z = torch.logsumexp(logits + log_n[:, None, None, :], dim=-1, keepdim=True)  # [B, G, T, 1]
        p = torch.exp(logits - log_z)
        p = torch.where(torch.isfinite(log_z), p, torch.zeros_like(p))
        score = p.mean(dim=(1, 2))  # [B, C]
        score = score.masked_fill(torch.isinf(log_n), 0.0)  # empty or dead clusters have no key to score
        out[:, h] = score
    return out


def _rank_within_cluster(labels: torch.Tensor, available: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """``[H, N]`` int64 rank of each available key among the available keys of its cluster, in key order."""
    h, n = labels.shape
    sort_label = torch.where(available, labels, torch.full_like(labels, num_clusters))
    order = torch.argsort(sort_label, dim=1, stable=True)
    sorted_label = sort_label.gather(1, order)
    counts = torch.zeros(h, num_clusters + 1, dtype=torch.long, device=labels.device)
    counts.scatter_add_(1, sort_label, torch.ones_like(sort_label))
    starts = torch.cumsum(counts, dim=1) - counts
    pos = torch.arange(n, device=labels.device).expand(h, n)
    rank_sorted = pos - starts.gather(1, sorted_label)
    return torch.empty_like(rank_sorted).scatter_(1, order, rank_sorted)


def _mask_to_selection(keep: torch.Tensor, scores: torch.Tensor) -> Selection:
    """``keep [B, Hkv, N]`` bool -> ascending zero-padded indices."""
    counts = keep.sum(-1)
    k_max = max(int(counts.max().item()) if counts.numel() else 0, 1)
    order = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)[..., :k_max]
    valid = torch.arange(k_max, device=keep.device) < counts[..., None]
    idx = torch.where(valid, order, torch.zeros_like(order))
    return Selection(idx.to(torch.int32), counts.to(torch.int32), scores)


def select_from_scores_reference(
    scores: torch.Tensor,
    key_labels: torch.Tensor,
    *,
    threshold: float | torch.Tensor | None = None,
    budget: float | None = None,
    always_keep: torch.Tensor | None = None,
    alive: torch.Tensor | None = None,
) -> Selection:
    """Turn cluster scores into per-(batch, KV head) key lists (semantics in the module docstring).

    Args:
        scores: ``[B, Hkv, C]`` fp32.
        key_labels: ``[Hkv, N]`` cluster id of every key.
        threshold / budget: exactly one.
        always_keep: ``[N]`` or ``[Hkv, N]`` bool.
        alive: ``[B, Hkv, C]`` bool, clusters allowed at all (hierarchical first level).
    """
    b, h, c = scores.shape
    n = key_labels.shape[1]
    labels = key_labels.long().to(scores.device)
    always = (
        torch.zeros(h, n, dtype=torch.bool, device=scores.device)
        if always_keep is None
        else always_keep.to(scores.device).expand(h, n)
    )
    if alive is None:
        alive = torch.ones(b, h, c, dtype=torch.bool, device=scores.device)
    labels_b = labels[None].expand(b, h, n)
    if threshold is not None:
        thr = torch.as_tensor(threshold, dtype=torch.float32, device=scores.device).expand(h)
        take_cluster = alive & (scores > thr[None, :, None])
        keep = always[None] | take_cluster.gather(2, labels_b)
        return _mask_to_selection(keep, scores)

    available = ~always
    avail = torch.zeros(h, c + 1, dtype=torch.long, device=scores.device)
    avail.scatter_add_(1, torch.where(available, labels, torch.full_like(labels, c)), torch.ones_like(labels))
    avail = avail[:, :c]
    k_total = budget_to_count(budget, n)
    k_rest = (k_total - always.sum(1)).clamp(min=0)  # [H]
    s = scores.masked_fill(~alive, float("-inf"))
    order = torch.argsort(s, dim=-1, descending=True, stable=True)
    av_sorted = torch.where(alive, avail[None].expand(b, h, c), torch.zeros_like(avail[None])).gather(2, order)
    before = torch.cumsum(av_sorted, dim=-1) - av_sorted
    take_sorted = (k_rest[None, :, None] - before).clamp(min=0).minimum(av_sorted)
    take = torch.zeros_like(take_sorted).scatter_(2, order, take_sorted)
    rank = _rank_within_cluster(labels, available, c)
    keep = always[None] | (available[None] & (rank[None] < take.gather(2, labels_b)))
    return _mask_to_selection(keep, scores)


def centroid_lookup_reference(
    q, centroids, cluster_sizes, key_labels, *, threshold=None, budget=None, always_keep=None, scale: float
) -> Selection:
    """Single-level lookup: scores of every centroid, then selection (shapes as in ``ops.centroid_lookup``)."""
    scores = cluster_scores_reference(q, centroids, cluster_sizes, scale)
    return select_from_scores_reference(
        scores, key_labels, threshold=threshold, budget=budget, always_keep=always_keep
    )


def coarse_alive(coarse_scores: torch.Tensor, fine_to_coarse: torch.Tensor, coarse_threshold) -> torch.Tensor:
    """``[B, Hkv, C2]`` bool: fine clusters whose coarse parent scored above ``coarse_threshold``."""
    b, h, _ = coarse_scores.shape
    thr = torch.as_tensor(coarse_threshold, dtype=torch.float32, device=coarse_scores.device).expand(h)
    coarse_keep = coarse_scores > thr[None, :, None]
    return coarse_keep.gather(2, fine_to_coarse.long().to(coarse_scores.device)[None].expand(b, -1, -1))


def hierarchical_lookup_reference(
    q,
    coarse_centroids,
    coarse_sizes,
    fine_to_coarse,
    fine_centroids,
    fine_sizes,
    key_labels,
    *,
    coarse_threshold,
    threshold=None,
    budget=None,
    always_keep=None,
    scale: float,
) -> Selection:
    """Two-level lookup (shapes as in ``ops.hierarchical_lookup``)."""
    coarse_scores = cluster_scores_reference(q, coarse_centroids, coarse_sizes, scale)
    alive = coarse_alive(coarse_scores, fine_to_coarse, coarse_threshold)
    fine_scores = cluster_scores_reference(q, fine_centroids, fine_sizes, scale, alive=alive)
    return select_from_scores_reference(
        fine_scores, key_labels, threshold=threshold, budget=budget, always_keep=always_keep, alive=alive
    )


def selection_mask(selection: Selection, num_keys: int) -> torch.Tensor:
    """``[B, Hkv, N]`` bool mask of the selected keys."""
    idx = selection.key_indices.long()
    valid = torch.arange(idx.shape[-1], device=idx.device) < selection.key_counts[..., None].long()
    target = torch.where(valid, idx, torch.full_like(idx, num_keys))  # padding goes to a dropped extra column
    mask = torch.zeros(*idx.shape[:2], num_keys + 1, dtype=torch.bool, device=idx.device)
    mask.scatter_(2, target, True)
    mask = mask[..., :num_keys]
    return mask


def masked_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> AttentionResult:
    """Attention of every query over the keys its mask allows.

    Args:
        q: ``[B, Hq, T, D]``; k, v: ``[B or 1, Hkv, N, D]``.
        mask: ``[B or 1, Hkv, T or 1, N]`` bool (True = attend) or None (all).
    """
    b, hq, t, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    out = torch.zeros(b, hq, t, v.shape[-1], dtype=torch.float32, device=q.device)
    lse = torch.full((b, hq, t), float("-inf"), dtype=torch.float32, device=q.device)
    for h in range(hkv):
        qh = q[:, h * g : (h + 1) * g].float()  # [B, G, T, D]
        kh = k[:, h].float().expand(b, -1, -1)  # [B, N, D]
        vh = v[:, h].float().expand(b, -1, -1)
        s = torch.einsum("bgtd,bnd->bgtn", qh, kh) * scale
        if mask is not None:
            s = s.masked_fill(~mask[:, h][:, None].expand(b, g, t, -1), float("-inf"))
        l = torch.logsumexp(s, dim=-1)  # [B, G, T]
        p = torch.exp(s - l[..., None])
        p = torch.where(torch.isfinite(l)[..., None], p, torch.zeros_like(p))
        out[:, h * g : (h + 1) * g] = torch.einsum("bgtn,bnd->bgtd", p, vh)
        lse[:, h * g : (h + 1) * g] = l
    return AttentionResult(out.to(q.dtype), lse)


def sparse_attention_reference(q, k, v, selection: Selection, *, scale: float) -> AttentionResult:
    """Exact attention over the selected keys of each (batch, KV head); no causal mask inside the fixed context."""
    mask = selection_mask(selection, k.shape[2])[:, :, None, :]  # [B, Hkv, 1, N]
    return masked_attention_reference(q, k, v, mask, scale)


def dense_attention_reference(q, k, v, *, causal: bool, scale: float) -> AttentionResult:
    """Dense attention; with ``causal`` query t sees keys ``n <= t + N - T`` (bottom-right aligned)."""
    t, n = q.shape[2], k.shape[2]
    mask = None
    if causal:
        rows = torch.arange(t, device=q.device)[:, None]
        cols = torch.arange(n, device=q.device)[None, :]
        mask = (cols <= rows + (n - t))[None, None].expand(1, k.shape[1], t, n)
    return masked_attention_reference(q, k, v, mask, scale)


def merge_attention_reference(a: AttentionResult, b: AttentionResult) -> AttentionResult:
    """Exact log-sum-exp merge of two attentions of the same queries over disjoint key sets."""
    m = torch.maximum(a.lse, b.lse)
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    wa = torch.exp(a.lse - m_safe)  # exp(-inf) = 0 for an empty side
    wb = torch.exp(b.lse - m_safe)
    denom = wa + wb
    lse = torch.where(denom > 0, m_safe + torch.log(denom), torch.full_like(m, float("-inf")))
    inv = torch.where(denom > 0, 1.0 / denom, torch.zeros_like(denom))
    out = (a.out.float() * (wa * inv)[..., None] + b.out.float() * (wb * inv)[..., None]).to(a.out.dtype)
    return AttentionResult(out, lse)
