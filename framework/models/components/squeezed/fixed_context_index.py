"""`FixedContextIndex`: built once per (model, fixed context), saved, reloaded, then serves many user inputs.

Build (research note §3.1-§3.3): one dense prefill of the context records the post-RoPE keys/values of every layer
and the queries of the observation window (the last W tokens); k-means (cosine assignment, centroid = mean of raw
keys) clusters the first N - W keys of every (layer, KV head); the cluster-probability estimate of every clustered key
under the observation-window queries is pooled over all layers and heads, and global thresholds are quantiles of that
pool. Optional attention sinks (the first S tokens; ours, not the paper's) are, like the window, never clustered
and always attended. Two levels add coarse centroids clustered from the fine ones.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import DynamicCache

from framework.kernels.squeezed_attention import centroid_lookup, kmeans
from framework.models.components.squeezed.fixed_prefix_cache import in_place_cache_layers
from framework.models.components.squeezed.index_file import read_index_file, write_index_file
from framework.progress import StageClock
from framework.models.components.squeezed.layer_index import LayerIndex
from framework.models.components.squeezed.squeezed_attention import SqueezedAttention
from framework.models.components.squeezed.transformers_backend import capture_queries

FORMAT_VERSION = 2  # 2: checksummed container (index_file.py)
DEFAULT_CALIBRATION_BUDGETS = (0.5, 0.3, 0.2, 0.1)  # = the paper's quantiles p in {0.5, 0.7, 0.8, 0.9}


@dataclass(frozen=True)
class ModelShape:
    """Attention shape an index is tied to."""

    num_layers: int
    num_query_heads: int
    num_kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, model: nn.Module) -> "ModelShape":
        """Read the shape off a Transformers model's config."""
        cfg = model.config
        heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        return cls(
            num_layers=cfg.num_hidden_layers,
            num_query_heads=heads,
            num_kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
        )


@dataclass
class IndexMetadata:
    """What an index was built from and how (saved with it)."""

    format_version: int
    model_shape: ModelShape
    context_length: int
    context_fingerprint: str
    centroid_fraction: float
    levels: int
    coarse_fraction: float
    observation_window: int
    attention_sinks: int
    kmeans_iters: int
    kmeans_seed: int
    calibration_budgets: tuple[float, ...]
    fine_thresholds: dict[float, float] = field(default_factory=dict)
    coarse_thresholds: dict[float, float] = field(default_factory=dict)


@dataclass
class ContextPrefill:
    """KV cache and observation-window queries of one dense prefill of a fixed context (shared by index builds).

    Attributes:
        keys, values: per layer [1, Hkv, N, D].
        window_queries: per layer [1, Hq, W, D] fp32 post-RoPE queries of the last W positions (empty if W = 0).
        observation_window: W.
        context_fingerprint: `context_fingerprint` of the context ids.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    window_queries: list[torch.Tensor]
    observation_window: int
    context_fingerprint: str


def context_fingerprint(context_ids: torch.Tensor) -> str:
    """sha256 of the context token ids (int64, flattened) and their count."""
    ids = torch.as_tensor(context_ids).reshape(-1).to(torch.int64).cpu().contiguous()
    digest = hashlib.sha256(str(ids.numel()).encode())
    digest.update(ids.numpy().tobytes())
    return digest.hexdigest()


def _threshold_from_sorted(scores_desc: torch.Tensor, keep: float) -> float:
    """Threshold keeping (strict >) at most round(keep * n) of the pooled scores [n] sorted descending."""
    n = scores_desc.numel()
    k = int(round(keep * n))
    if k >= n:
        return float("-inf")
    return float(scores_desc[k].item())


class FixedContextIndex:
    """Per-layer fixed-context KV + clustering + global threshold calibration.

    Attributes:
        metadata: `IndexMetadata`.
        layers: one `LayerIndex` per attention layer.
        fine_scores: [L * Hkv * (N - W)] fp32 pooled calibration scores, sorted descending.
        coarse_scores: same for the coarse level, or None.
    """

    def __init__(
        self,
        *,
        metadata: IndexMetadata,
        layers: list[LayerIndex],
        fine_scores: torch.Tensor,
        coarse_scores: torch.Tensor | None = None,
    ) -> None:
        if len(layers) != metadata.model_shape.num_layers:
            raise ValueError(f"{len(layers)} layers given for a model of {metadata.model_shape.num_layers} layers")
        self.metadata = metadata
        self.layers = layers
        self.fine_scores = fine_scores
        self.coarse_scores = coarse_scores

    # ------------------------------------------------------------------ build
    @classmethod
    @torch.no_grad()
    def build(
        cls,
        model: nn.Module,
        context_ids: torch.Tensor,
        *,
        attention: SqueezedAttention | None = None,
        calibration_budgets: tuple[float, ...] = DEFAULT_CALIBRATION_BUDGETS,
        kmeans_init: str = "k-means++",
        prefill: "ContextPrefill | None" = None,
    ) -> "FixedContextIndex":
        """Prefill `context_ids` with `model`, cluster the keys and calibrate thresholds.

        Args:
            model: Transformers causal LM (Llama family; GQA allowed).
            context_ids: [1, N] or [N] token ids of the fixed context (N > observation window).
            attention: build settings (centroid_fraction, levels, coarse_fraction, observation_window, kmeans_*);
                default `SqueezedAttention()`.
            calibration_budgets: keep fractions whose thresholds are stored in the metadata, each in (0, 1].
            kmeans_init: "k-means++" (the paper's) or "random" (one step instead of C passes over the keys, for
                long contexts; see `framework.kernels.squeezed_attention.kmeans`).
            prefill: a `ContextPrefill` of the same model and context (from `FixedContextIndex.prefill`), reused
                instead of running the model again (several indexes of one context, e.g. with and without sinks).

        Returns:
            the built index.
        """
        attention = SqueezedAttention() if attention is None else attention
        ids = torch.as_tensor(context_ids)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.dim() != 2 or ids.shape[0] != 1:
            raise ValueError(f"context_ids must have shape [N] or [1, N], got {tuple(ids.shape)}")
        n, w, sinks = int(ids.shape[1]), attention.observation_window, attention.attention_sinks
        if n <= w + sinks:
            raise ValueError(
                f"the fixed context has {n} tokens, which is not longer than the observation window ({w}) plus "
                f"the attention sinks ({sinks}); use a context of more than {w + sinks} tokens or a smaller "
                "observation_window"
            )
        for b in calibration_budgets:
            if not (isinstance(b, (int, float)) and 0.0 < float(b) <= 1.0):
                raise ValueError(f"calibration budgets must be in (0, 1], got {b!r}")
        shape = ModelShape.of(model)
        clock = StageClock(f"building the Squeezed Attention index of a {n}-token context "
                           f"({shape.num_layers} layers x {shape.num_kv_heads} KV heads)")
        if prefill is None:
            prefill = cls.prefill(model, ids, observation_window=w)
            clock.mark("prefill")
        elif prefill.observation_window != w or prefill.context_fingerprint != context_fingerprint(ids):
            raise ValueError(
                f"the given prefill (window {prefill.observation_window}) is not of this context with "
                f"observation_window={w}"
            )
        num_clustered = n - w - sinks
        num_fine = max(1, math.floor(attention.centroid_fraction * num_clustered))
        num_coarse = max(1, math.floor(attention.coarse_fraction * num_clustered))
        num_coarse = min(num_coarse, num_fine)
        scale = shape.head_dim**-0.5
        # All (layer, KV head) pairs are clustered in one batched k-means call: heads are independent, and batching
        # amortises the sequential k-means++ seeding loop over every layer (30x fewer steps for a 30-layer model).
        all_keys, all_values = prefill.keys, prefill.values
        hkv = shape.num_kv_heads
        stacked = torch.cat([k[0, :, sinks : sinks + num_clustered].float() for k in all_keys])  # [L*Hkv, N', D]
        fine_all = kmeans(
            stacked, num_fine, iters=attention.kmeans_iters, seed=attention.kmeans_seed, init=kmeans_init
        )
        clock.mark(f"k-means ({num_fine} centroids per head)")
        layers: list[LayerIndex] = []
        for layer_idx in range(shape.num_layers):
            rows = slice(layer_idx * hkv, (layer_idx + 1) * hkv)
            layers.append(
                LayerIndex(
                    keys=all_keys[layer_idx],
                    values=all_values[layer_idx],
                    centroids=fine_all.centroids[rows].contiguous(),
                    cluster_sizes=fine_all.cluster_sizes[rows].contiguous(),
                    key_labels=fine_all.labels[rows].contiguous(),
                    observation_window=w,
                    attention_sinks=sinks,
                )
            )
        if attention.levels == 2:
            _add_coarse_levels(layers, num_coarse, attention)
        fine_pool, coarse_pool = [], []
        for layer_idx, layer in enumerate(layers):
            if w > 0:
                q_obs = prefill.window_queries[layer_idx].to(layer.keys.device)
                fine_pool.append(_key_scores(q_obs, layer.centroids, layer.cluster_sizes, layer.key_labels, scale))
                if attention.levels == 2:
                    coarse_labels = layer.fine_to_coarse.gather(1, layer.key_labels)
                    coarse_pool.append(
                        _key_scores(q_obs, layer.coarse_centroids, layer.coarse_sizes, coarse_labels, scale)
                    )
        if w == 0:
            # Without an observation window there are no calibration queries: only raw thresholds or top-k work.
            fine_scores = torch.empty(0)
            coarse_scores = None if attention.levels == 1 else torch.empty(0)
        else:
            fine_scores = torch.sort(torch.cat(fine_pool).cpu(), descending=True).values
            coarse_scores = (
                torch.sort(torch.cat(coarse_pool).cpu(), descending=True).values if attention.levels == 2 else None
            )
        if not torch.isfinite(fine_scores).all():
            raise ValueError("calibration produced non-finite cluster scores; check the model's keys for inf/NaN")
        clock.mark("coarse levels and threshold calibration")
        metadata = IndexMetadata(
            format_version=FORMAT_VERSION,
            model_shape=shape,
            context_length=n,
            context_fingerprint=context_fingerprint(ids),
            centroid_fraction=attention.centroid_fraction,
            levels=attention.levels,
            coarse_fraction=attention.coarse_fraction,
            observation_window=w,
            attention_sinks=sinks,
            kmeans_iters=attention.kmeans_iters,
            kmeans_seed=attention.kmeans_seed,
            calibration_budgets=tuple(float(b) for b in calibration_budgets),
        )
        index = cls(metadata=metadata, layers=layers, fine_scores=fine_scores, coarse_scores=coarse_scores)
        if w > 0:
            for b in metadata.calibration_budgets:
                metadata.fine_thresholds[b] = index.threshold_for(b, level="fine")
                if attention.levels == 2:
                    metadata.coarse_thresholds[b] = index.threshold_for(b, level="coarse")
        clock.done()
        return index

    @staticmethod
    @torch.no_grad()
    def prefill(model: nn.Module, context_ids: torch.Tensor, *, observation_window: int) -> "ContextPrefill":
        """One dense forward over the context: its KV cache and the post-RoPE queries of the last W positions.

        Args:
            model: Transformers causal LM.
            context_ids: [1, N] or [N] token ids.
            observation_window: W, queries recorded per layer.
        """
        ids = torch.as_tensor(context_ids)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        device = next(model.parameters()).device
        # Our own cache object, filled in place: no reliance on the output's (deprecated) `past_key_values` field.
        cache = DynamicCache()
        # Transformers renamed the cache argument (`past_key_values` -> `cache`); pass it under the name this
        # version's forward takes, so the cache is filled on either side of the rename.
        params = inspect.signature(model.forward).parameters
        cache_arg = "cache" if "cache" in params else "past_key_values"
        with capture_queries(model, observation_window) as capture:
            model(input_ids=ids.to(device), use_cache=True, **{cache_arg: cache})
        n_layers = ModelShape.of(model).num_layers
        return ContextPrefill(
            keys=[cache.layers[i].keys.detach() for i in range(n_layers)],
            values=[cache.layers[i].values.detach() for i in range(n_layers)],
            window_queries=[capture.queries[i] for i in range(n_layers)] if observation_window > 0 else [],
            observation_window=observation_window,
            context_fingerprint=context_fingerprint(ids),
        )

    # ------------------------------------------------------------------ serving helpers
    def threshold_for(self, keep: float, *, level: str = "fine") -> float:
        """Global threshold keeping the fraction `keep` of clustered keys on the calibration queries.

        Args:
            keep: fraction in (0, 1] (1 keeps everything: -inf).
            level: "fine" or "coarse".

        Returns:
            threshold on the estimated per-key probability (keys strictly above are kept).
        """
        if not (isinstance(keep, (int, float)) and 0.0 < float(keep) <= 1.0):
            raise ValueError(f"keep fraction must be in (0, 1], got {keep!r}")
        if level not in ("fine", "coarse"):
            raise ValueError(f"level must be 'fine' or 'coarse', got {level!r}")
        pool = self.fine_scores if level == "fine" else self.coarse_scores
        if pool is None:
            raise ValueError("this index has a single level: no coarse calibration")
        if float(keep) >= 1.0:
            return float("-inf")
        if pool.numel() == 0:
            raise ValueError(
                "this index was built with observation_window=0, so it has no calibration queries: "
                "use SqueezedAttention(threshold=...) or budget_mode='topk'"
            )
        return _threshold_from_sorted(pool, float(keep))

    def new_cache(self, batch_size: int = 1) -> DynamicCache:
        """A fresh `DynamicCache` holding the fixed-context KV (shared storage, expanded to `batch_size` rows).

        Its layers append in place (``InPlaceLayer``): the first append copies the context once into a buffer with
        slack, later tokens are written into it (a plain ``DynamicLayer`` re-copies the whole cache every token)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        cache = DynamicCache()
        in_place_cache_layers(cache)  # appends write into slack: generate() does not copy the context per token
        for i, layer in enumerate(self.layers):
            k = layer.keys.expand(batch_size, -1, -1, -1)
            v = layer.values.expand(batch_size, -1, -1, -1)
            cache.update(k, v, i)
        return cache

    def check_model(self, model: nn.Module) -> None:
        """Raise ValueError when `model`'s attention shape differs from the one the index was built for."""
        shape = ModelShape.of(model)
        if shape != self.metadata.model_shape:
            raise ValueError(
                f"this index was built for a model with {self.metadata.model_shape}, "
                f"but the model has {shape}; rebuild the index for this model"
            )

    def check_context(self, context_ids: torch.Tensor) -> None:
        """Raise ValueError when `context_ids` is not the context the index was built from."""
        fp = context_fingerprint(context_ids)
        n = int(torch.as_tensor(context_ids).numel())
        if fp != self.metadata.context_fingerprint:
            raise ValueError(
                f"this index was built for another fixed context ({self.metadata.context_length} tokens, "
                f"fingerprint {self.metadata.context_fingerprint[:12]}), got {n} tokens with fingerprint {fp[:12]}"
            )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index atomically with a sha256 checksum (`index_file.write_index_file`)."""
        path = Path(path)
        meta = asdict(self.metadata)
        meta["model_shape"] = asdict(self.metadata.model_shape)
        meta["fine_thresholds"] = [[k, v] for k, v in self.metadata.fine_thresholds.items()]
        meta["coarse_thresholds"] = [[k, v] for k, v in self.metadata.coarse_thresholds.items()]
        meta["calibration_budgets"] = list(self.metadata.calibration_budgets)
        state = {
            "metadata": meta,
            "layers": [layer.to_state() for layer in self.layers],
            "fine_scores": self.fine_scores,
            "coarse_scores": self.coarse_scores,
        }
        write_index_file(path, state)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        model: nn.Module | None = None,
        context_ids: torch.Tensor | None = None,
        map_location: str | torch.device = "cpu",
    ) -> "FixedContextIndex":
        """Read an index saved by `save`; when given, check it matches `model` and `context_ids`.

        Raises:
            FileNotFoundError: no file at `path`.
            ValueError: (naming `path`) an empty, truncated, foreign or corrupted file (checksum), an unknown format
                version or inconsistent contents; or an index built for another model shape / context.
        """
        path = Path(path)
        state = read_index_file(path, map_location=map_location)
        index = _index_from_state(path, state)
        if model is not None:
            index.check_model(model)
        if context_ids is not None:
            index.check_context(context_ids)
        return index


def _index_from_state(path: Path, state: dict) -> FixedContextIndex:
    """Rebuild an index from a verified payload; missing or inconsistent fields are one ValueError naming `path`."""
    try:
        meta = dict(state["metadata"])
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported index format_version {meta.get('format_version')!r}; expected {FORMAT_VERSION}")
        meta["model_shape"] = ModelShape(**meta["model_shape"])
        meta["fine_thresholds"] = {float(k): float(v) for k, v in meta["fine_thresholds"]}
        meta["coarse_thresholds"] = {float(k): float(v) for k, v in meta["coarse_thresholds"]}
        meta["calibration_budgets"] = tuple(meta["calibration_budgets"])
        metadata = IndexMetadata(**meta)
        layers = [LayerIndex.from_state(s) for s in state["layers"]]
        shape = metadata.model_shape
        for i, layer in enumerate(layers):
            want = (1, shape.num_kv_heads, metadata.context_length, shape.head_dim)
            if tuple(layer.keys.shape) != want or tuple(layer.values.shape) != want:
                raise ValueError(f"layer {i}: keys/values of shape {tuple(layer.keys.shape)}, expected {want}")
            c = layer.centroids.shape[1]
            labels = layer.key_labels
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= c):
                raise ValueError(f"layer {i}: cluster labels outside [0, {c})")
        return FixedContextIndex(
            metadata=metadata, layers=layers, fine_scores=state["fine_scores"], coarse_scores=state["coarse_scores"]
        )
    except (KeyError, TypeError, AttributeError, IndexError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: not a valid fixed-context index ({type(err).__name__}: {err})") from None


def _key_scores(q_obs, centroids, sizes, labels, scale) -> torch.Tensor:
    """[Hkv * K] estimated probability of every labelled key under the calibration queries (flattened)."""
    sel = centroid_lookup(q_obs, centroids, sizes, labels, threshold=float("inf"), scale=scale)
    scores = sel.cluster_scores[0]  # [Hkv, C]
    return scores.gather(1, labels).reshape(-1).float()


def _add_coarse_levels(layers: list[LayerIndex], num_coarse: int, attention: SqueezedAttention) -> None:
    """Cluster every layer's fine centroids into `num_coarse` coarse ones (paper: k-means on the L2 centroids).

    The coarse centroid is the size-weighted mean of its fine centroids, i.e. the mean of the raw keys it covers
    (our choice; the paper does not say how the coarse centroid is summarised). One batched k-means call serves all
    layers.
    """
    fine = torch.cat([layer.centroids for layer in layers])  # [L*Hkv, C, D]
    sizes_all = torch.cat([layer.cluster_sizes for layer in layers])  # [L*Hkv, C]
    coarse = kmeans(fine, num_coarse, iters=attention.kmeans_iters, seed=attention.kmeans_seed)
    f2c = coarse.labels  # [L*Hkv, C]
    h, _, d = fine.shape
    weighted = torch.zeros(h, num_coarse, d, dtype=fine.dtype, device=fine.device)
    weighted.scatter_add_(1, f2c.unsqueeze(-1).expand(-1, -1, d), fine * sizes_all.to(fine.dtype).unsqueeze(-1))
    coarse_sizes = torch.zeros(h, num_coarse, dtype=torch.int64, device=fine.device)
    coarse_sizes.scatter_add_(1, f2c, sizes_all)
    centroids = weighted / coarse_sizes.clamp_min(1).unsqueeze(-1).to(fine.dtype)
    hkv = layers[0].centroids.shape[0]
    for i, layer in enumerate(layers):
        rows = slice(i * hkv, (i + 1) * hkv)
        layer.coarse_centroids = centroids[rows].contiguous()
        layer.coarse_sizes = coarse_sizes[rows].contiguous()
        layer.fine_to_coarse = f2c[rows].contiguous()
