"""Per-layer data of a fixed-context index: the fixed KV cache, the clustering and the observation window."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from framework.kernels.squeezed_attention.bounded_scores import cluster_radii


@dataclass
class LayerIndex:
    """Everything one attention layer needs to serve user inputs against the fixed context.

    Shapes: Hkv KV heads, N fixed-context tokens, W observation-window tokens (the last W of the context, always
    attended and never clustered), S attention sinks (the first S tokens, always attended and never clustered; 0 in
    the paper), D head dim, C fine clusters, C1 coarse clusters. The clustered keys are positions S .. N-W-1.

    Attributes:
        keys: [1, Hkv, N, D] post-RoPE keys of the fixed context (model dtype).
        values: [1, Hkv, N, D] values of the fixed context.
        centroids: [Hkv, C, D] fp32, mean of the raw keys of each cluster (keys S .. N-W-1).
        cluster_sizes: [Hkv, C] int64 keys per cluster.
        key_labels: [Hkv, N - W - S] int64 cluster of each clustered key.
        observation_window: W.
        attention_sinks: S.
        coarse_centroids: [Hkv, C1, D] fp32 or None (single level).
        coarse_sizes: [Hkv, C1] int64 or None.
        fine_to_coarse: [Hkv, C] int64 or None.
    """

    keys: torch.Tensor
    values: torch.Tensor
    centroids: torch.Tensor
    cluster_sizes: torch.Tensor
    key_labels: torch.Tensor
    observation_window: int
    attention_sinks: int = 0
    coarse_centroids: torch.Tensor | None = None
    coarse_sizes: torch.Tensor | None = None
    fine_to_coarse: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        """N, the fixed-context length."""
        return int(self.keys.shape[2])

    @property
    def num_clustered(self) -> int:
        """N - W - S, the keys that carry cluster labels."""
        return int(self.key_labels.shape[1])

    @property
    def levels(self) -> int:
        """1 for a single-level index, 2 when coarse centroids exist."""
        return 1 if self.coarse_centroids is None else 2

    def cluster_radii(self) -> torch.Tensor:
        """[Hkv, C] fp32 largest distance of a clustered key to its centroid (computed once, not saved)."""
        cached = self.__dict__.get("_radii")
        if cached is None:
            s = self.attention_sinks
            keys = self.keys[0, :, s : s + self.num_clustered]
            cached = cluster_radii(keys, self.key_labels.to(keys.device), self.centroids.to(keys.device))
            self.__dict__["_radii"] = cached
        return cached

    def metadata_vectors(self, levels: int) -> int:
        """Key-sized vectors per KV head read by a lookup of `levels` levels (fine centroids, plus coarse ones)."""
        count = int(self.centroids.shape[1])
        if levels == 2 and self.coarse_centroids is not None:
            count += int(self.coarse_centroids.shape[1])
        return count

    def to_state(self) -> dict[str, torch.Tensor | int]:
        """Plain dict of tensors/ints for `torch.save` (loadable with weights_only=True)."""
        state: dict[str, torch.Tensor | int] = {
            "keys": self.keys,
            "values": self.values,
            "centroids": self.centroids,
            "cluster_sizes": self.cluster_sizes,
            "key_labels": self.key_labels,
            "observation_window": self.observation_window,
            "attention_sinks": self.attention_sinks,
        }
        if self.coarse_centroids is not None:
            state["coarse_centroids"] = self.coarse_centroids
            state["coarse_sizes"] = self.coarse_sizes
            state["fine_to_coarse"] = self.fine_to_coarse
        return state

    @classmethod
    def from_state(cls, state: dict) -> "LayerIndex":
        """Inverse of `to_state`."""
        return cls(
            keys=state["keys"],
            values=state["values"],
            centroids=state["centroids"],
            cluster_sizes=state["cluster_sizes"],
            key_labels=state["key_labels"],
            observation_window=int(state["observation_window"]),
            attention_sinks=int(state.get("attention_sinks", 0)),
            coarse_centroids=state.get("coarse_centroids"),
            coarse_sizes=state.get("coarse_sizes"),
            fine_to_coarse=state.get("fine_to_coarse"),
        )
