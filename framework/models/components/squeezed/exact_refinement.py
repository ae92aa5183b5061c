"""Exact refinement of a centroid selection (ours, not in the paper): clusters pick candidates, exact scores pick keys.

A centroid is the mean of keys that point in different directions, so `q·c` under-scores the one key of a wide
cluster that matches the query (issue 21's attribution: clusters of ~20 keys, radius ~60 % of the key norm). Here
the cluster estimate only shortlists: the clusters are ranked by their estimated score and their keys, in that
order, form `candidates` keys per (batch row, KV head); the exact attention probabilities of the queries over those
candidates then keep the best `keep` of them. Reading the candidates' keys costs `candidates` key-sized vectors,
charged to the budget like the centroids (`SqueezedAttention.metadata_vectors`).

With every clustered key a candidate this is the oracle top-k over the clustered keys; with `candidates == keep`
it keeps the top-ranked clusters' keys, like the paper's top-k selection.
"""

from __future__ import annotations

import torch


def candidate_count(keep: int, ratio: float, available: int) -> int:
    """M = min(available, max(keep, round(ratio · keep))) candidates for `keep` kept keys."""
    return min(available, max(keep, round(ratio * keep)))


def candidate_keys(cluster_scores: torch.Tensor, key_labels: torch.Tensor, candidates: int) -> torch.Tensor:
    """The first `candidates` clustered keys when keys are ordered by their cluster's score (best first).

    Ties between clusters are broken by the cluster id, keys of one cluster come in ascending index order.

    Args:
        cluster_scores: [B, Hkv, C] estimated scores.
        key_labels: [Hkv, Nc] cluster of each clustered key.
        candidates: 1 <= candidates <= Nc.

    Returns:
        [B, Hkv, candidates] int64 indices into the Nc clustered keys.
    """
    b, hkv, c = cluster_scores.shape
    nc = key_labels.shape[-1]
    if not 1 <= candidates <= nc:
        raise ValueError(f"candidates must be in [1, {nc}], got {candidates}")
    # rank of each cluster (0 = best); a stable sort by rank keeps keys of one cluster in index order
    order = torch.sort(cluster_scores.float(), dim=-1, descending=True, stable=True).indices  # [B, Hkv, C]
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(c, device=order.device).expand(b, hkv, c))
    key_rank = rank.gather(-1, key_labels.to(order.device).long().unsqueeze(0).expand(b, hkv, nc))  # [B, Hkv, Nc]
    return torch.sort(key_rank, dim=-1, stable=True).indices[..., :candidates]


def refine_candidates(
    query: torch.Tensor, keys: torch.Tensor, candidates: torch.Tensor, *, keep: int, scale: float,
    forced: torch.Tensor | None = None,
) -> torch.Tensor:
    """Keep the `keep` candidates with the largest exact attention probability.

    The probability of a candidate is its softmax weight among the candidates, averaged over the T queries and the
    G query heads of the KV group (the rule `OracleTopK` uses over all keys). Keys marked in `forced` (sinks, a
    window) are kept before any other, whatever their score.

    Args:
        query: [B, Hq, T, D] post-RoPE queries.
        keys: [B or 1, Hkv, Nc, D] the clustered keys.
        candidates: [B, Hkv, M] indices into the Nc keys.
        keep: 1 <= keep <= M.
        scale: softmax scale.
        forced: optional [Nc] bool, keys kept first (at most `keep` of them among the candidates).

    Returns:
        [B, Hkv, keep] int64 indices into the Nc keys (unordered).
    """
    b, hq, t, d = query.shape
    hkv, m = candidates.shape[1], candidates.shape[2]
    if not 1 <= keep <= m:
        raise ValueError(f"keep must be in [1, {m}], got {keep}")
    g = hq // hkv
    cand_keys = keys.float().expand(b, -1, -1, -1).gather(2, candidates.unsqueeze(-1).expand(b, hkv, m, d))
    q = query.float().reshape(b, hkv, g * t, d)
    probs = torch.softmax(torch.matmul(q, cand_keys.transpose(-1, -2)) * scale, dim=-1).mean(dim=2)  # [B, Hkv, M]
    if forced is not None:
        probs = probs.masked_fill(forced.to(candidates.device)[candidates], float("inf"))
    best = torch.topk(probs, keep, dim=-1).indices
    return candidates.gather(-1, best)
