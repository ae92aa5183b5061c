"""Public API of the Squeezed Attention kernels (contract: /work/helpers/squeezed_contract.md).

Notation: B batch, Hq query heads, Hkv KV heads (GQA group G = Hq // Hkv), T query tokens, N fixed-context keys,
D head dim, C clusters. Every op takes ``backend``: "auto" (Triton for CUDA tensors, the PyTorch reference
otherwise), "triton" (CUDA, or CPU under ``TRITON_INTERPRET=1``), or "reference".

Additions beyond the contract (the contract's calls keep working unchanged):
- ``layout=`` on the lookups: a :class:`ClusterLayout` from :func:`cluster_contiguous_layout` (K/V permuted into
  cluster-contiguous order once). The Triton path then expands selected clusters as runs without reading
  per-key labels; indices refer to the permuted keys (use ``layout.k``/``layout.v`` in ``sparse_attention``).
- ``always_keep`` may be ``[Hkv, N]`` as well as ``[N]``.
- ``select_from_scores`` (thresholding / budget selection of precomputed cluster scores).
- ``sync=`` on the lookups (threshold mode: False avoids the one host sync, buffer sized to N).
"""

from __future__ import annotations

import torch

from . import reference as ref
from .kmeans import kmeans as _kmeans
from .layout import cluster_contiguous_layout, unpermute_indices
from .results import AttentionResult, ClusterLayout, KMeansResult, Selection
from .validation import (
    check_always_keep,
    check_backend,
    check_float,
    check_gqa,
    check_head_dim,
    check_labels,
    check_lookup_index,
    check_query,
    check_rank,
    check_threshold_budget,
    resolve_scale,
)

__all__ = [
    "kmeans",
    "centroid_lookup",
    "hierarchical_lookup",
    "select_from_scores",
    "sparse_attention",
    "sparse_attention_union",
    "merge_attention",
    "dense_attention",
    "cluster_contiguous_layout",
    "unpermute_indices",
    "set_decode_path",
    "decode_path",
    "KMeansResult",
    "Selection",
    "AttentionResult",
    "ClusterLayout",
]


DECODE_PATHS = ("split", "fused")


def set_decode_path(path: str) -> None:
    """Select the Triton decode kernels: "split" (default; logits, scores, budget search, expansion and split-K
    attention + reduce as separate launches) or "fused" (one lookup launch + the parallel expansion, the split-K
    reduce inside the attention kernel; ``triton_fused.py``). Both compute the same selection and output."""
    if path not in DECODE_PATHS:
        raise ValueError(f"decode path must be one of {DECODE_PATHS}, got {path!r}")
    _triton().set_decode_path(path)


def decode_path() -> str:
    """The Triton decode path in use ("split" or "fused")."""
    return _triton().decode_path()


def _triton():
    from . import triton_ops  # imported lazily: the reference path must not need a working Triton

    return triton_ops


def kmeans(
    x: torch.Tensor,
    num_clusters: int,
    *,
    iters: int = 300,
    seed: int = 0,
    tol: float = 1e-4,
    init: str = "k-means++",
    normalize: bool = True,
    backend: str = "auto",
) -> KMeansResult:
    """Cosine k-means of ``x [H, N, D]`` into ``num_clusters`` clusters per head (torch on x's device).

    ``init``: "k-means++" (the paper's) or "random" (C distinct points per head; one step instead of C passes).
    ``normalize=False``: Euclidean k-means of the raw vectors instead of the cosine assignment.

    ``backend`` is accepted for uniformity; k-means is written in torch and runs on the GPU as is.
    """
    check_backend(backend)
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be a bool, got {normalize!r}")
    return _kmeans(x, num_clusters, iters=iters, seed=seed, tol=tol, init=init, normalize=normalize)


def _check_sync(sync) -> None:
    if not isinstance(sync, bool):
        raise ValueError(f"sync must be a bool, got {sync!r}")


def _check_layout(layout: ClusterLayout | None, key_labels: torch.Tensor, num_clusters: int) -> None:
    if layout is None:
        return
    if not isinstance(layout, ClusterLayout):
        raise ValueError(f"layout must be a ClusterLayout or None, got {type(layout).__name__}")
    if layout.key_labels.shape != key_labels.shape:
        raise ValueError(
            f"layout covers labels of shape {tuple(layout.key_labels.shape)}, key_labels has {tuple(key_labels.shape)}"
        )
    if layout.cluster_offsets.shape[1] != num_clusters + 1:
        raise ValueError(
            f"layout was built for {layout.cluster_offsets.shape[1] - 1} clusters, the centroids have {num_clusters}"
        )


def centroid_lookup(
    q: torch.Tensor,
    centroids: torch.Tensor,
    cluster_sizes: torch.Tensor,
    key_labels: torch.Tensor,
    *,
    threshold: float | torch.Tensor | None = None,
    budget: float | None = None,
    always_keep: torch.Tensor | None = None,
    scale: float | None = None,
    layout: ClusterLayout | None = None,
    sync: bool = True,
    backend: str = "auto",
) -> Selection:
    """Select the fixed-context keys of each (batch, KV head) from its cluster scores.

    Args:
        q: ``[B, Hq, T, D]`` queries (user input, or one decode token per sequence).
        centroids: ``[Hkv, C, D]``; cluster_sizes: ``[Hkv, C]``; key_labels: ``[Hkv, N]``.
        threshold: keep clusters whose score is ``> threshold`` (float or ``[Hkv]`` tensor), or
        budget: fraction in (0, 1] of the N keys to keep, by descending score (exactly one of the two).
        always_keep: ``[N]`` (or ``[Hkv, N]``) bool, keys always selected (observation window).
        scale: softmax scale (default ``D ** -0.5``).
        layout: optional cluster-contiguous layout (then ``key_labels`` must be ``layout.key_labels`` and
            ``always_keep`` defaults to ``layout.always_keep``).
        sync: threshold mode only: True sizes ``key_indices`` to the largest count (one host sync); False sizes it
            to N without waiting for the GPU (CUDA-graph friendly). Budget mode never syncs.

    Returns:
        :class:`Selection` (``key_indices [B, Hkv, K_max]`` int32 ascending, ``key_counts [B, Hkv]``,
        ``cluster_scores [B, Hkv, C]`` fp32).
    """
    be = check_backend(backend, q, centroids)
    _, hq, _, d = check_query(q, be)
    hkv, c = check_lookup_index("centroids", centroids, cluster_sizes, d)
    check_gqa(hq, hkv)
    n = check_labels(key_labels, hkv)
    _check_layout(layout, key_labels, c)
    if layout is not None and always_keep is None:
        always_keep = layout.always_keep
    check_always_keep(always_keep, hkv, n)
    check_threshold_budget(threshold, budget, hkv)
    _check_sync(sync)
    s = resolve_scale(scale, d)
    if be == "reference":
        return ref.centroid_lookup_reference(
            q, centroids, cluster_sizes, key_labels, threshold=threshold, budget=budget, always_keep=always_keep,
            scale=s,
        )
    return _triton().centroid_lookup(
        q, centroids, cluster_sizes, key_labels, threshold=threshold, budget=budget, always_keep=always_keep,
        scale=s, layout=layout, sync=sync,
    )


def hierarchical_lookup(
    q: torch.Tensor,
    coarse_centroids: torch.Tensor,
    coarse_sizes: torch.Tensor,
    fine_to_coarse: torch.Tensor,
    fine_centroids: torch.Tensor,
    fine_sizes: torch.Tensor,
    key_labels: torch.Tensor,
    *,
    coarse_threshold: float | torch.Tensor,
    threshold: float | torch.Tensor | None = None,
    budget: float | None = None,
    always_keep: torch.Tensor | None = None,
    scale: float | None = None,
    layout: ClusterLayout | None = None,
    sync: bool = True,
    backend: str = "auto",
) -> Selection:
    """Two-level lookup: coarse clusters scoring ``<= coarse_threshold`` prune their fine children.

    Args:
        q: ``[B, Hq, T, D]``.
        coarse_centroids: ``[Hkv, C1, D]``; coarse_sizes: ``[Hkv, C1]`` (keys per coarse cluster).
        fine_to_coarse: ``[Hkv, C2]`` int coarse parent of every fine cluster.
        fine_centroids: ``[Hkv, C2, D]``; fine_sizes: ``[Hkv, C2]``; key_labels: ``[Hkv, N]`` fine labels.
        coarse_threshold: float or ``[Hkv]`` tensor (``-inf`` keeps every coarse cluster).
        threshold / budget, always_keep, scale, layout, sync: as in :func:`centroid_lookup`, applied to fine clusters;
            the fine estimated denominator counts surviving clusters only.

    Returns:
        :class:`Selection` with fine ``cluster_scores [B, Hkv, C2]`` (0 for pruned clusters).
    """
    be = check_backend(backend, q, coarse_centroids, fine_centroids)
    _, hq, _, d = check_query(q, be)
    hkv, c1 = check_lookup_index("coarse_centroids", coarse_centroids, coarse_sizes, d)
    hkv2, c2 = check_lookup_index("fine_centroids", fine_centroids, fine_sizes, d)
    if hkv2 != hkv:
        raise ValueError(f"fine_centroids have {hkv2} KV heads, coarse_centroids {hkv}")
    check_gqa(hq, hkv)
    if tuple(fine_to_coarse.shape) != (hkv, c2) or fine_to_coarse.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"fine_to_coarse must be an int tensor of shape [Hkv, C2]=[{hkv}, {c2}], "
            f"got {tuple(fine_to_coarse.shape)} {fine_to_coarse.dtype}"
        )
    n = check_labels(key_labels, hkv)
    _check_layout(layout, key_labels, c2)
    if layout is not None and always_keep is None:
        always_keep = layout.always_keep
    check_always_keep(always_keep, hkv, n)
    check_threshold_budget(threshold, budget, hkv)
    check_threshold_budget(coarse_threshold, None, hkv)
    _check_sync(sync)
    s = resolve_scale(scale, d)
    if be == "reference":
        return ref.hierarchical_lookup_reference(
            q, coarse_centroids, coarse_sizes, fine_to_coarse, fine_centroids, fine_sizes, key_labels,
            coarse_threshold=coarse_threshold, threshold=threshold, budget=budget, always_keep=always_keep, scale=s,
        )
    return _triton().hierarchical_lookup(
        q, coarse_centroids, coarse_sizes, fine_to_coarse, fine_centroids, fine_sizes, key_labels,
        coarse_threshold=coarse_threshold, threshold=threshold, budget=budget, always_keep=always_keep, scale=s,
        layout=layout, sync=sync,
    )


def select_from_scores(
    scores: torch.Tensor,
    key_labels: torch.Tensor,
    *,
    threshold: float | torch.Tensor | None = None,
    budget: float | None = None,
    always_keep: torch.Tensor | None = None,
    layout: ClusterLayout | None = None,
    sync: bool = True,
    backend: str = "auto",
) -> Selection:
    """Selection from precomputed ``scores [B, Hkv, C]`` (the second half of :func:`centroid_lookup`)."""
    check_rank("scores", scores, 3, "[B, Hkv, C]")
    be = check_backend(backend, scores)
    b, hkv, c = scores.shape
    n = check_labels(key_labels, hkv)
    _check_layout(layout, key_labels, c)
    if layout is not None and always_keep is None:
        always_keep = layout.always_keep
    check_always_keep(always_keep, hkv, n)
    check_threshold_budget(threshold, budget, hkv)
    _check_sync(sync)
    scores = scores.float()
    if be == "reference":
        return ref.select_from_scores_reference(
            scores, key_labels, threshold=threshold, budget=budget, always_keep=always_keep
        )
    return _triton().select_from_scores(
        scores, key_labels, threshold=threshold, budget=budget, always_keep=always_keep, layout=layout, sync=sync
    )


def _check_kv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, be: str) -> tuple[int, int]:
    b, hq, _, d = q.shape
    check_rank("k", k, 4, "[B, Hkv, N, D]")
    check_rank("v", v, 4, "[B, Hkv, N, D]")
    check_float("k", k, be)
    check_float("v", v, be)
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    bk, hkv, n, dk = k.shape
    check_head_dim("k", dk)
    if dk != d:
        raise ValueError(f"k head dim {dk} differs from q head dim {d}")
    if bk not in (1, b):
        raise ValueError(f"k/v batch must be 1 (shared context) or B={b}, got {bk}")
    if n < 1:
        raise ValueError("k/v must hold at least one key (N >= 1)")
    check_gqa(hq, hkv)
    return hkv, n


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    selection: Selection,
    *,
    scale: float | None = None,
    backend: str = "auto",
) -> AttentionResult:
    """Exact attention of each query over the selected fixed-context keys of its KV head.

    Args:
        q: ``[B, Hq, T, D]``; k, v: ``[B or 1, Hkv, N, D]`` (same dtype as q).
        selection: from a lookup (``key_indices [B, Hkv, K_max]``, ``key_counts [B, Hkv]``).

    Returns:
        :class:`AttentionResult` (``out [B, Hq, T, D]``, ``lse [B, Hq, T]``; lse = -inf and out = 0 for a head
        with no selected key). T == 1 runs the split-K decode kernel, T > 1 the prefill kernel.
    """
    be = check_backend(backend, q, k, v)
    b, hq, t, d = check_query(q, be)
    hkv, n = _check_kv(q, k, v, be)
    _check_selection(selection, b, hkv)
    s = resolve_scale(scale, d)
    if be == "reference":
        return ref.sparse_attention_reference(q, k, v, selection, scale=s)
    return _triton().sparse_attention(q, k, v, selection, scale=s)


def _check_selection(selection, b: int, hkv: int, name: str = "selection") -> None:
    if not isinstance(selection, Selection):
        raise ValueError(f"{name} must be a Selection, got {type(selection).__name__}")
    if selection.key_indices.dim() != 3 or tuple(selection.key_indices.shape[:2]) != (b, hkv):
        raise ValueError(
            f"{name}.key_indices must have shape [B, Hkv, K_max] with B={b}, Hkv={hkv}, "
            f"got {tuple(selection.key_indices.shape)}"
        )
    if tuple(selection.key_counts.shape) != (b, hkv):
        raise ValueError(f"{name}.key_counts must have shape [{b}, {hkv}], got {tuple(selection.key_counts.shape)}")


def sparse_attention_union(
    q: torch.Tensor,
    first: tuple[torch.Tensor, torch.Tensor, Selection],
    second: tuple[torch.Tensor, torch.Tensor, Selection],
    *,
    scale: float | None = None,
    backend: str = "auto",
) -> AttentionResult:
    """Exact attention over the selected keys of two disjoint key sources (e.g. the fixed context and the
    per-sequence tail of user input / generated tokens) = ``merge_attention`` of two ``sparse_attention`` calls.

    Args:
        q: ``[B, Hq, T, D]``.
        first, second: ``(k, v, selection)`` each with ``k, v [B or 1, Hkv, N_i, D]``; the first selection may be
            None (every key of the first source: dense).

    Returns:
        :class:`AttentionResult`. Decode (T == 1) on the Triton backend runs both sources into one split-K
        partial buffer and one reduce (3 launches instead of 5).
    """
    be = check_backend(backend, q, first[0], first[1], second[0], second[1])
    b, hq, t, d = check_query(q, be)
    for name, src in (("first", first), ("second", second)):
        if not isinstance(src, tuple) or len(src) != 3:
            raise ValueError(f"{name} must be a tuple (k, v, selection), got {type(src).__name__}")
        k, v, sel = src
        hkv, _ = _check_kv(q, k, v, be)
        if sel is not None or name == "second":
            _check_selection(sel, b, hkv, f"{name} selection")
    s = resolve_scale(scale, d)
    if be == "reference" or t > 1:
        k1, v1, sel1 = first
        a = (dense_attention(q, k1, v1, causal=False, scale=s, backend=be) if sel1 is None
             else sparse_attention(q, k1, v1, sel1, scale=s, backend=be))
        return merge_attention(a, sparse_attention(q, *second, scale=s, backend=be), backend=be)
    return _triton().sparse_attention_union(q, first, second, scale=s)


def dense_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    scale: float | None = None,
    backend: str = "auto",
) -> AttentionResult:
    """Dense attention with lse (for the dynamic part: user input / generated tokens).

    Args:
        q: ``[B, Hq, T, D]``; k, v: ``[B or 1, Hkv, N, D]``.
        causal: query t sees keys ``n <= t + N - T`` (aligned bottom-right when T < N).
    """
    be = check_backend(backend, q, k, v)
    check_query(q, be)
    _check_kv(q, k, v, be)
    if not isinstance(causal, bool):
        raise ValueError(f"causal must be a bool, got {causal!r}")
    s = resolve_scale(scale, q.shape[-1])
    if be == "reference":
        return ref.dense_attention_reference(q, k, v, causal=causal, scale=s)
    return _triton().dense_attention(q, k, v, causal=causal, scale=s)


def merge_attention(a: AttentionResult, b: AttentionResult, *, backend: str = "auto") -> AttentionResult:
    """Exact log-sum-exp merge of two attentions of the same queries over disjoint key sets.

    ``backend``: "auto" (one Triton launch for CUDA tensors, PyTorch otherwise), "triton", "reference". The out
    dtype is ``a.out``'s; ``b.out`` must share it.
    """
    for name, r in (("a", a), ("b", b)):
        if not isinstance(r, AttentionResult):
            raise ValueError(f"{name} must be an AttentionResult, got {type(r).__name__}")
    if a.out.shape != b.out.shape or a.lse.shape != b.lse.shape:
        raise ValueError(
            f"cannot merge attentions of different shapes: out {tuple(a.out.shape)} vs {tuple(b.out.shape)}, "
            f"lse {tuple(a.lse.shape)} vs {tuple(b.lse.shape)}"
        )
    if tuple(a.lse.shape) != tuple(a.out.shape[:-1]):
        raise ValueError(f"lse shape {tuple(a.lse.shape)} must be out's without the head dim {tuple(a.out.shape)}")
    be = check_backend(backend, a.out, b.out)
    if be == "reference" or a.out.dtype != b.out.dtype:
        return ref.merge_attention_reference(a, b)
    check_float("a.out", a.out, be)
    check_head_dim("out", a.out.shape[-1])
    return _triton().merge_attention(a, b)
