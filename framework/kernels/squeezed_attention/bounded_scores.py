"""PyTorch reference of cluster scores from an upper bound of the cluster's best key, and max-over-queries
aggregation (issue 21's selection variants; the paper's score is the special case radius_weight=0, aggregation
"mean", which equals `reference.cluster_scores_reference`).

For query row i and cluster j with centroid c_j and radius r_j = max_{k in j} ||k - c_j||, Cauchy-Schwarz gives
q_i . k <= q_i . c_j + ||q_i|| r_j for every key k of the cluster. The bounded logit is

    A_ij = scale * (q_i . c_j + w * ||q_i|| * r_j)          (w = radius_weight in [0, 1]; w = 1 is a true bound)

and the estimated probability is P_ij = exp(A_ij) / sum_j' n_j' exp(A_ij') as in the paper (log-sum-exp). Cluster
scores aggregate P_ij over the T queries and G query heads of the KV group by their mean (the paper) or their max
(a cluster needed by any one query is kept).
"""

from __future__ import annotations

import torch

AGGREGATIONS = ("mean", "max")

__all__ = ["AGGREGATIONS", "cluster_radii", "bounded_cluster_scores_reference"]


def cluster_radii(keys: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Largest distance of a member key to its centroid.

    Args:
        keys: ``[H, N, D]`` clustered keys.
        labels: ``[H, N]`` int cluster of each key.
        centroids: ``[H, C, D]``.

    Returns:
        ``[H, C]`` fp32 radii (0 for empty clusters).
    """
    h, c, _ = centroids.shape
    lab = labels.long()
    dist = (keys.float() - centroids.float().gather(1, lab[..., None].expand(-1, -1, keys.shape[-1]))).norm(dim=-1)
    out = torch.zeros(h, c, dtype=torch.float32, device=keys.device)
    return out.scatter_reduce_(1, lab, dist, reduce="amax", include_self=True)


def bounded_cluster_scores_reference(
    q: torch.Tensor,
    centroids: torch.Tensor,
    cluster_sizes: torch.Tensor,
    scale: float,
    *,
    radii: torch.Tensor | None = None,
    radius_weight: float = 0.0,
    aggregation: str = "mean",
) -> torch.Tensor:
    """Estimated cluster probabilities with bounded logits and a choice of aggregation.

    Args:
        q: ``[B, Hq, T, D]`` queries.
        centroids: ``[Hkv, C, D]``; cluster_sizes: ``[Hkv, C]``.
        scale: softmax scale.
        radii: ``[Hkv, C]`` (needed when radius_weight > 0).
        radius_weight: w in [0, 1].
        aggregation: "mean" or "max" over the T queries and G heads of a group.

    Returns:
        ``[B, Hkv, C]`` fp32 scores (0 for empty clusters).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if not 0.0 <= float(radius_weight) <= 1.0:
        raise ValueError(f"radius_weight must be in [0, 1], got {radius_weight}")
    if radius_weight > 0 and radii is None:
        raise ValueError("radius_weight > 0 needs the cluster radii")
    b, hq, t, d = q.shape
    hkv, c, _ = centroids.shape
    g = hq // hkv
    out = torch.empty(b, hkv, c, dtype=torch.float32, device=q.device)
    for h in range(hkv):
        qh = q[:, h * g : (h + 1) * g].float()  # [B, G, T, D]
        logits = torch.einsum("bgtd,cd->bgtc", qh, centroids[h].float()) * scale  # [B, G, T, C]
        if radius_weight > 0:
            qnorm = qh.norm(dim=-1, keepdim=True)  # [B, G, T, 1]
            logits = logits + (radius_weight * scale) * qnorm * radii[h].float().to(q.device)
        log_n = torch.log(cluster_sizes[h].float().to(q.device)).expand(b, c)  # -inf for empty clusters
        log_z = torch.logsumexp(logits + log_n[:, None, None, :], dim=-1, keepdim=True)
        p = torch.exp(logits - log_z)
        p = torch.where(torch.isfinite(log_z), p, torch.zeros_like(p))
        score = p.mean(dim=(1, 2)) if aggregation == "mean" else p.amax(dim=(1, 2))
        out[:, h] = score.masked_fill(torch.isinf(log_n), 0.0)
    return out
