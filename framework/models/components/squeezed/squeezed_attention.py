"""`SqueezedAttention`: the drop-in attention module of Squeezed Attention (arXiv:2411.09688).

It holds the method's settings (how an index is built and how keys are selected) and computes, for the queries of
one layer, exact attention over the fixed-context keys selected by the centroid lookup plus dense attention over the
user input / generated tokens, merged by log-sum-exp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from framework.kernels.squeezed_attention import Selection, centroid_lookup, hierarchical_lookup, select_from_scores
from framework.kernels.squeezed_attention.bounded_scores import AGGREGATIONS, bounded_cluster_scores_reference
from framework.kernels.squeezed_attention.validation import budget_to_count
from framework.models.components.squeezed.exact_refinement import candidate_count, candidate_keys, refine_candidates
from framework.models.components.squeezed.fixed_and_dynamic import attend_fixed_and_dynamic
from framework.models.components.squeezed.layer_index import LayerIndex
from framework.models.components.squeezed.selection_tools import frame_selection, selection_from_indices
from framework.models.components.squeezed.transformers_backend import check_fixed_prefix

BUDGET_MODES = ("calibrated", "topk")
KERNEL_BACKENDS = ("auto", "triton", "reference")


@dataclass
class SqueezedAttentionOutput:
    """Result of one layer.

    Attributes:
        out: [B, Hq, T, D] attention output (dtype of the queries).
        lse: [B, Hq, T] fp32 natural-log log-sum-exp over every attended key.
        selection: the fixed-context `Selection` (key_indices [B, Hkv, K_max], key_counts [B, Hkv]).
    """

    out: torch.Tensor
    lse: torch.Tensor
    selection: Selection


def _check_fraction(name: str, value: float, *, allow_one: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    value = float(value)
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if not (value > 0.0 and upper_ok):
        allowed = "(0, 1]" if allow_one else "(0, 1)"
        raise ValueError(f"{name} must be in {allowed}, got {value}")
    return value


class SqueezedAttention(nn.Module):
    """Squeezed Attention settings + the per-layer sparse/dense attention.

    Build-time settings (used by `FixedContextIndex.build`): `centroid_fraction`, `levels`, `coarse_fraction`,
    `observation_window`, `kmeans_iters`, `kmeans_seed`. Serve-time settings: exactly one of `threshold` (raw global
    threshold on the estimated per-key attention probability) or `budget` (target fraction of the clustered
    fixed-context keys to attend; default 0.3), `budget_mode` ("calibrated": the paper's global threshold calibrated
    on the observation-window queries to keep `budget` of the keys; "topk": exactly `budget` of the clustered keys per
    (batch row, KV head), ranked by the same estimate), and `coarse_keep` for two levels.

    The observation window (the last W context tokens) is always attended on top of the selected keys. Optionally
    (`attention_sinks` > 0; our addition, not in the paper) the first S context tokens are too and are left out of
    the clustering: in small models a sink token can hold most of a head's attention, and when k-means puts it in a
    cluster with ordinary keys the centroid estimate misses it.

    Args:
        centroid_fraction: centroids per (layer, KV head) as a fraction of the N - W clustered keys, in (0, 1].
        levels: 1 (single level) or 2 (hierarchical: coarse centroids clustered from the fine ones).
        coarse_fraction: coarse centroids as a fraction of the clustered keys (levels 2), below centroid_fraction.
        observation_window: W >= 0, context tail used as calibration queries and always attended.
        attention_sinks: S >= 0 leading context tokens always attended and not clustered (0 = the paper).
        threshold: raw threshold; a key is kept when its cluster's estimated probability exceeds it.
        budget: target fraction of clustered keys attended, in (0, 1].
        budget_mode: "calibrated" or "topk".
        coarse_keep: fraction of keys the coarse level keeps on the calibration queries, in (0, 1].
        kmeans_iters: maximum k-means iterations (the note's default is 300).
        kmeans_seed: k-means seed.
        radius_weight: w in [0, 1]; cluster logits q.c + w ||q|| r (r: the cluster's radius; w = 1 is an upper
            bound of its best key's logit). 0 = the paper. Ours; needs budget_mode "topk" or a raw threshold.
        query_aggregation: "mean" (the paper) or "max" of the estimated probabilities over the queries and the
            query heads of a KV group. Ours; "max" needs budget_mode "topk" or a raw threshold.
        refine_ratio: 0 (the paper) or r >= 1: the cluster estimate shortlists r * K candidate keys (whole clusters
            in rank order) and their exact attention probabilities keep the K = `budget` * Nc best
            (`exact_refinement`); the candidates' keys are charged to the budget as metadata. Ours; needs
            budget_mode "topk" and levels 1.
        backend: kernel backend, "auto" | "triton" | "reference".
    """

    def __init__(
        self,
        *,
        centroid_fraction: float = 0.05,
        levels: int = 1,
        coarse_fraction: float = 0.01,
        observation_window: int = 100,
        attention_sinks: int = 0,
        threshold: float | None = None,
        budget: float | None = None,
        budget_mode: str = "calibrated",
        coarse_keep: float = 0.5,
        kmeans_iters: int = 300,
        kmeans_seed: int = 0,
        radius_weight: float = 0.0,
        query_aggregation: str = "mean",
        refine_ratio: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.centroid_fraction = _check_fraction("centroid_fraction", centroid_fraction)
        if levels not in (1, 2) or isinstance(levels, bool):
            raise ValueError(f"levels must be 1 or 2, got {levels!r}")
        self.levels = int(levels)
        self.coarse_fraction = _check_fraction("coarse_fraction", coarse_fraction)
        if self.levels == 2 and self.coarse_fraction >= self.centroid_fraction:
            raise ValueError(
                f"coarse_fraction ({coarse_fraction}) must be below centroid_fraction ({centroid_fraction}) "
                "for two levels"
            )
        if isinstance(observation_window, bool) or not isinstance(observation_window, int) or observation_window < 0:
            raise ValueError(f"observation_window must be an int >= 0, got {observation_window!r}")
        self.observation_window = observation_window
        if isinstance(attention_sinks, bool) or not isinstance(attention_sinks, int) or attention_sinks < 0:
            raise ValueError(f"attention_sinks must be an int >= 0, got {attention_sinks!r}")
        self.attention_sinks = attention_sinks
        if threshold is not None and budget is not None:
            raise ValueError(f"give exactly one of threshold ({threshold}) and budget ({budget}), not both")
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(float(threshold)):
                raise ValueError(f"threshold must be a real number, got {threshold!r}")
            self.threshold: float | None = float(threshold)
            self.budget: float | None = None
        else:
            self.threshold = None
            self.budget = _check_fraction("budget", 0.3 if budget is None else budget)
        if budget_mode not in BUDGET_MODES:
            raise ValueError(f"budget_mode must be one of {BUDGET_MODES}, got {budget_mode!r}")
        self.budget_mode = budget_mode
        self.coarse_keep = _check_fraction("coarse_keep", coarse_keep)
        if isinstance(kmeans_iters, bool) or not isinstance(kmeans_iters, int) or kmeans_iters < 1:
            raise ValueError(f"kmeans_iters must be an int >= 1, got {kmeans_iters!r}")
        self.kmeans_iters = kmeans_iters
        self.kmeans_seed = int(kmeans_seed)
        if isinstance(radius_weight, bool) or not isinstance(radius_weight, (int, float)) or not (
            0.0 <= float(radius_weight) <= 1.0
        ):
            raise ValueError(f"radius_weight must be a number in [0, 1], got {radius_weight!r}")
        self.radius_weight = float(radius_weight)
        if query_aggregation not in AGGREGATIONS:
            raise ValueError(f"query_aggregation must be one of {AGGREGATIONS}, got {query_aggregation!r}")
        self.query_aggregation = query_aggregation
        if self.bounded_scores:
            if self.levels == 2:
                raise ValueError("radius_weight / query_aggregation='max' support levels=1 only")
            if self.threshold is None and self.budget_mode == "calibrated":
                raise ValueError(
                    "radius_weight > 0 or query_aggregation='max' change the score scale, which the index's "
                    "calibration does not cover: use budget_mode='topk' or a raw threshold"
                )
        if (
            isinstance(refine_ratio, bool)
            or not isinstance(refine_ratio, (int, float))
            or not math.isfinite(float(refine_ratio))
            or not (float(refine_ratio) == 0.0 or float(refine_ratio) >= 1.0)
        ):
            raise ValueError(f"refine_ratio must be 0 (off) or a finite number >= 1, got {refine_ratio!r}")
        self.refine_ratio = float(refine_ratio)
        if self.refine_ratio and (self.levels != 1 or self.threshold is not None or self.budget_mode != "topk"):
            raise ValueError(
                f"refine_ratio={refine_ratio} needs levels=1 and a budget with budget_mode='topk' "
                f"(got levels={self.levels}, threshold={self.threshold}, budget_mode={self.budget_mode!r})"
            )
        if backend not in KERNEL_BACKENDS:
            raise ValueError(f"backend must be one of {KERNEL_BACKENDS}, got {backend!r}")
        self.backend = backend
        # Resolved by `bind` from an index's calibration.
        self._fine_threshold: float | None = self.threshold
        self._coarse_threshold: float | None = None
        self._bound = False

    @property
    def bounded_scores(self) -> bool:
        """True when the cluster scores differ from the paper's (radius bound or max aggregation)."""
        return self.radius_weight > 0 or self.query_aggregation != "mean"

    def extra_repr(self) -> str:
        sel = f"threshold={self.threshold}" if self.threshold is not None else f"budget={self.budget}"
        return (
            f"centroid_fraction={self.centroid_fraction}, levels={self.levels}, "
            f"observation_window={self.observation_window}, attention_sinks={self.attention_sinks}, {sel}, "
            f"budget_mode={self.budget_mode}, radius_weight={self.radius_weight}, "
            f"query_aggregation={self.query_aggregation}"
            + (f", refine_ratio={self.refine_ratio}" if self.refine_ratio else "")
        )

    def bind(self, index) -> "SqueezedAttention":
        """Resolve thresholds from a `FixedContextIndex`'s calibration and check the build settings agree.

        Args:
            index: `FixedContextIndex` this module will serve.

        Returns:
            self.
        """
        meta = index.metadata
        if meta.observation_window != self.observation_window:
            raise ValueError(
                f"observation_window={self.observation_window} does not match the index "
                f"(built with observation_window={meta.observation_window})"
            )
        if meta.attention_sinks != self.attention_sinks:
            raise ValueError(
                f"attention_sinks={self.attention_sinks} does not match the index "
                f"(built with attention_sinks={meta.attention_sinks})"
            )
        if abs(meta.centroid_fraction - self.centroid_fraction) > 1e-12:
            raise ValueError(
                f"centroid_fraction={self.centroid_fraction} does not match the index "
                f"(built with centroid_fraction={meta.centroid_fraction})"
            )
        if self.levels > meta.levels:
            raise ValueError(f"levels={self.levels} needs a {self.levels}-level index; this one has {meta.levels}")
        if self.levels == 2 and abs(meta.coarse_fraction - self.coarse_fraction) > 1e-12:
            raise ValueError(
                f"coarse_fraction={self.coarse_fraction} does not match the index "
                f"(built with coarse_fraction={meta.coarse_fraction})"
            )
        if self.threshold is None and self.budget_mode == "calibrated":
            self._fine_threshold = index.threshold_for(self.budget, level="fine")
        if self.levels == 2:
            self._coarse_threshold = index.threshold_for(self.coarse_keep, level="coarse")
        self._bound = True
        return self

    def metadata_vectors(self, layer: LayerIndex) -> int:
        """Centroids per KV head read by one lookup (fine, plus coarse for two levels), for budget accounting.

        The radius bound also reads one scalar per cluster: C / D key-sized vectors.
        """
        vectors = layer.metadata_vectors(self.levels)
        if self.radius_weight > 0:
            vectors += layer.centroids.shape[1] / layer.centroids.shape[2]
        if self.refine_ratio:
            vectors += self.refine_counts(layer.num_clustered)[1]
        return vectors

    def refine_counts(self, num_clustered: int) -> tuple[int, int]:
        """(K kept, M candidates) clustered keys per (batch row, KV head) under exact refinement."""
        keep = budget_to_count(self.budget, num_clustered)
        return keep, candidate_count(keep, self.refine_ratio, num_clustered)

    def _cluster_scores(self, query: torch.Tensor, layer: LayerIndex, scale: float) -> torch.Tensor:
        """[B, Hkv, C] estimated cluster probabilities under this module's radius weight and aggregation (PyTorch)."""
        return bounded_cluster_scores_reference(
            query,
            layer.centroids.to(query.device),
            layer.cluster_sizes.to(query.device),
            scale,
            radii=layer.cluster_radii().to(query.device) if self.radius_weight > 0 else None,
            radius_weight=self.radius_weight,
            aggregation=self.query_aggregation,
        )

    def select(self, query: torch.Tensor, layer: LayerIndex, *, scale: float) -> Selection:
        """Pick the fixed-context keys for these queries (one selection per batch row and KV head).

        Args:
            query: [B, Hq, T, D] post-RoPE queries.
            layer: the layer's `LayerIndex`.
            scale: softmax scale used for the estimate.

        Returns:
            `Selection` over the N fixed-context keys (clustered keys above threshold + the observation window).
        """
        if not self._bound and (self.levels == 2 or (self.threshold is None and self.budget_mode == "calibrated")):
            raise RuntimeError("SqueezedAttention.bind(index) must be called before select() in calibrated mode")
        if self.threshold is not None or self.budget_mode == "calibrated":
            rule = {"threshold": self._fine_threshold}
        else:
            rule = {"budget": self.budget}
        if self.refine_ratio:
            scores = self._cluster_scores(query, layer, scale)
            keep, candidates = self.refine_counts(layer.num_clustered)
            shortlist = candidate_keys(scores, layer.key_labels, candidates)
            s0 = layer.attention_sinks
            clustered = layer.keys[:, :, s0 : s0 + layer.num_clustered].to(query.device)
            chosen = refine_candidates(query, clustered, shortlist, keep=keep, scale=scale)
            refined = selection_from_indices(chosen)
            selection = Selection(refined.key_indices, refined.key_counts, scores)
        elif self.bounded_scores:
            scores = self._cluster_scores(query, layer, scale)
            selection = select_from_scores(scores, layer.key_labels, backend=self.backend, **rule)
        elif self.levels == 1:
            selection = centroid_lookup(
                query, layer.centroids, layer.cluster_sizes, layer.key_labels, scale=scale, backend=self.backend, **rule
            )
        else:
            selection = hierarchical_lookup(
                query,
                layer.coarse_centroids,
                layer.coarse_sizes,
                layer.fine_to_coarse,
                layer.centroids,
                layer.cluster_sizes,
                layer.key_labels,
                coarse_threshold=self._coarse_threshold,
                scale=scale,
                backend=self.backend,
                **rule,
            )
        return frame_selection(
            selection,
            sinks=layer.attention_sinks,
            tail_first=layer.attention_sinks + layer.num_clustered,
            tail_count=layer.observation_window,
        )

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        layer: LayerIndex,
        scale: float | None = None,
        dynamic_mask: torch.Tensor | None = None,
    ) -> SqueezedAttentionOutput:
        """Attention of user-input / generated queries over the fixed context (sparse) and the dynamic tokens (dense).

        Args:
            query: [B, Hq, T, D] post-RoPE queries.
            key: [B, Hkv, L, D] cache keys, fixed context first (L >= N).
            value: [B, Hkv, L, D] cache values.
            layer: the layer's `LayerIndex` (N = layer.num_tokens).
            scale: softmax scale (default D ** -0.5).
            dynamic_mask: [B, 1 or Hq, T, L - N] bool or None (plain bottom-right causal).

        Returns:
            `SqueezedAttentionOutput`.
        """
        check_fixed_prefix(query.shape[2], key.shape[2], layer.num_tokens, where="SqueezedAttention.forward")
        scale = query.shape[-1] ** -0.5 if scale is None else scale
        selection = self.select(query, layer, scale=scale)
        result = attend_fixed_and_dynamic(
            query,
            key,
            value,
            selection,
            num_fixed=layer.num_tokens,
            scale=scale,
            dynamic_mask=dynamic_mask,
            backend=self.backend,
        )
        return SqueezedAttentionOutput(out=result.out, lse=result.lse, selection=selection)
