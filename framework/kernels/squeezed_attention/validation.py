"""Early input checks for the Squeezed Attention ops: each raises ``ValueError`` naming the value and what is allowed."""

from __future__ import annotations

import math
import os

import torch

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128, 256)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
BACKENDS = ("auto", "triton", "reference")


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def check_backend(backend: str, *tensors: torch.Tensor) -> str:
    """Resolve ``backend`` to "triton" or "reference"."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    on_cuda = all(t.is_cuda for t in tensors)
    if backend == "auto":
        return "triton" if on_cuda else "reference"
    if backend == "triton" and not on_cuda and not interpreting():
        raise ValueError(
            "backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before import for CPU tensors; "
            f"got tensors on {sorted({str(t.device) for t in tensors})}"
        )
    return backend


def check_float(name: str, t: torch.Tensor, backend: str) -> None:
    """Dtype must be fp16/bf16/fp32 (fp32/fp16 only in the Triton interpreter, which has no bf16 matmul)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{name}.dtype must be one of {[str(d) for d in SUPPORTED_DTYPES]}, got {t.dtype}")
    if backend == "triton" and interpreting() and t.dtype == torch.bfloat16:
        raise ValueError(
            f"{name}.dtype bfloat16 is not supported by the Triton CPU interpreter; allowed there: float16, float32"
        )


def check_head_dim(name: str, d: int) -> None:
    if d not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"{name} head dim must be one of {SUPPORTED_HEAD_DIMS}, got {d}")


def check_rank(name: str, t: torch.Tensor, rank: int, layout: str) -> None:
    if t.dim() != rank:
        raise ValueError(f"{name} must have shape {layout} ({rank} dims), got shape {tuple(t.shape)}")


def check_budget(budget: float) -> None:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget):
        raise ValueError(f"budget must be a number in (0, 1], got {budget!r}")
    if not 0.0 < float(budget) <= 1.0:
        raise ValueError(f"budget must be in (0, 1], got {budget!r}")


def budget_to_count(budget: float, num_keys: int) -> int:
    """Number of keys a budget keeps: ``ceil(budget * N)`` (tolerant to float noise), at least 1, at most N."""
    return max(1, min(num_keys, math.ceil(float(budget) * num_keys - 1e-6)))


def resolve_scale(scale: float | None, head_dim: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number or None, got {scale!r}")
    return float(scale)


def check_query(q: torch.Tensor, backend: str) -> tuple[int, int, int, int]:
    check_rank("q", q, 4, "[B, Hq, T, D]")
    check_float("q", q, backend)
    check_head_dim("q", q.shape[-1])
    b, hq, t, d = q.shape
    if b < 1 or hq < 1 or t < 1:
        raise ValueError(f"q must have B, Hq, T >= 1, got shape {tuple(q.shape)}")
    return b, hq, t, d


def check_gqa(hq: int, hkv: int) -> int:
    if hkv < 1 or hq % hkv != 0:
        raise ValueError(f"query heads ({hq}) must be a multiple of KV heads ({hkv})")
    return hq // hkv


def check_threshold_budget(threshold, budget, hkv: int) -> None:
    if (threshold is None) == (budget is None):
        raise ValueError(
            f"exactly one of threshold / budget must be given, got threshold={threshold!r}, budget={budget!r}"
        )
    if budget is not None:
        check_budget(budget)
    if threshold is not None:
        if isinstance(threshold, torch.Tensor):
            if threshold.shape not in ((hkv,), ()):
                raise ValueError(f"threshold tensor must have shape [Hkv]=[{hkv}] or [], got {tuple(threshold.shape)}")
        elif isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
            raise ValueError(f"threshold must be a float (or a [Hkv] tensor), got {threshold!r}")


def check_always_keep(always_keep: torch.Tensor | None, hkv: int, n: int) -> None:
    if always_keep is None:
        return
    if not isinstance(always_keep, torch.Tensor) or always_keep.dtype != torch.bool:
        raise ValueError(f"always_keep must be a bool tensor of shape [N] or [Hkv, N], got {always_keep!r}")
    if always_keep.shape not in ((n,), (hkv, n)):
        raise ValueError(
            f"always_keep must have shape [N]=[{n}] or [Hkv, N]=[{hkv}, {n}], got {tuple(always_keep.shape)}"
        )


def check_lookup_index(name: str, centroids: torch.Tensor, sizes: torch.Tensor, d: int) -> tuple[int, int]:
    check_rank(name, centroids, 3, "[Hkv, C, D]")
    if centroids.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{name}.dtype must be one of {[str(x) for x in SUPPORTED_DTYPES]}, got {centroids.dtype}")
    hkv, c, dc = centroids.shape
    if dc != d:
        raise ValueError(f"{name} head dim {dc} differs from the query head dim {d}")
    if c < 1:
        raise ValueError(f"{name} must have at least one cluster, got shape {tuple(centroids.shape)}")
    if tuple(sizes.shape) != (hkv, c):
        raise ValueError(f"cluster sizes for {name} must have shape [Hkv, C]=[{hkv}, {c}], got {tuple(sizes.shape)}")
    return hkv, c


def check_labels(key_labels: torch.Tensor, hkv: int) -> int:
    check_rank("key_labels", key_labels, 2, "[Hkv, N]")
    if key_labels.shape[0] != hkv:
        raise ValueError(f"key_labels must have Hkv={hkv} rows, got shape {tuple(key_labels.shape)}")
    if key_labels.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"key_labels.dtype must be int32 or int64, got {key_labels.dtype}")
    if key_labels.shape[1] < 1:
        raise ValueError("key_labels must cover at least one key (N >= 1)")
    return key_labels.shape[1]
