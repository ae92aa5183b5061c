"""Dataclass outputs of the Squeezed Attention kernels (see ``ops.py`` for the functions that return them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["KMeansResult", "Selection", "AttentionResult", "ClusterLayout"]


@dataclass
class KMeansResult:
    """Result of :func:`framework.kernels.squeezed_attention.kmeans`.

    Attributes:
        centroids: ``[H, C, D]`` fp32, mean of the RAW (un-normalized) vectors of each cluster; zero for an empty one.
        labels: ``[H, N]`` int64 cluster id of every vector (assignment is by cosine: on L2-normalized vectors).
        cluster_sizes: ``[H, C]`` int64 number of vectors per cluster.
        inertia: per iteration, the k-means objective on the normalized vectors, summed over heads:
            ``sum ||x/|x| - mu_label||^2`` with ``mu`` the mean of the normalized vectors of a cluster (the
            objective cuML minimizes when fed normalized keys, as the paper does).
    """

    centroids: torch.Tensor
    labels: torch.Tensor
    cluster_sizes: torch.Tensor
    inertia: list[float] = field(default_factory=list)


@dataclass
class Selection:
    """The fixed-context keys chosen for every (batch, KV head).

    Attributes:
        key_indices: ``[B, Hkv, K_max]`` int32, indices into the N fixed-context keys (into the permuted keys when
            the lookup was given a :class:`ClusterLayout`), ascending, padded with 0 after ``key_counts``.
        key_counts: ``[B, Hkv]`` int32 number of valid entries of ``key_indices``.
        cluster_scores: ``[B, Hkv, C]`` fp32 estimated attention probability of one key of each cluster, averaged
            over the T queries and the G query heads of the KV group (0 for clusters pruned by a hierarchical
            first level).
    """

    key_indices: torch.Tensor
    key_counts: torch.Tensor
    cluster_scores: torch.Tensor

    def trimmed(self) -> "Selection":
        """Same selection with ``K_max`` cut to the largest count (one host sync)."""
        k_max = int(self.key_counts.max().item()) if self.key_counts.numel() else 0
        return Selection(self.key_indices[..., :k_max].contiguous(), self.key_counts, self.cluster_scores)

    def kept_fraction(self, num_keys: int) -> torch.Tensor:
        """``[B, Hkv]`` fp32 fraction of the ``num_keys`` fixed-context keys that were selected."""
        return self.key_counts.float() / float(num_keys)


@dataclass
class AttentionResult:
    """Attention output with its log-sum-exp, so partial attentions merge exactly.

    Attributes:
        out: ``[B, Hq, T, D]`` in the dtype of q (0 where no key was attended).
        lse: ``[B, Hq, T]`` fp32 natural-log log-sum-exp of the scaled scores (-inf where no key was attended).
    """

    out: torch.Tensor
    lse: torch.Tensor


@dataclass
class ClusterLayout:
    """Fixed-context K/V stored cluster-contiguously (built once by :func:`cluster_contiguous_layout`).

    Per KV head the N keys are reordered so that the keys of cluster 0 come first (in original order), then those of
    cluster 1, ..., then the always-kept keys (observation window) in original order. Selected keys then form
    contiguous runs (coalesced loads) and the lookup needs no per-key label read.

    Attributes:
        k, v: ``[B, Hkv, N, D]`` permuted keys / values (B may be 1 for a shared context).
        key_labels: ``[Hkv, N]`` int64 label of the key stored at each new position.
        permutation: ``[Hkv, N]`` int64, ``permutation[h, p]`` = original position of the key stored at ``p``.
        cluster_offsets: ``[Hkv, C + 1]`` int32 start of every cluster's run; ``cluster_offsets[:, C]`` = first
            always-kept position (= N - num_always).
        always_keep: ``[Hkv, N]`` bool, True on the trailing always-kept run (pass it as ``always_keep``).
        num_always: number of always-kept keys (same for every head).
    """

    k: torch.Tensor
    v: torch.Tensor
    key_labels: torch.Tensor
    permutation: torch.Tensor
    cluster_offsets: torch.Tensor
    always_keep: torch.Tensor
    num_always: int
