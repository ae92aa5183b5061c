"""Shared random inputs for the Squeezed Attention kernel tests."""

from __future__ import annotations

import os

import torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def random_index(hkv: int, n: int, c: int, d: int, *, seed: int, device="cpu", dtype=torch.float32):
    """Random labels covering every cluster, their sizes, and centroids ``[Hkv, C, D]``."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (hkv, n), generator=g)
    labels[:, :c] = torch.arange(c)  # every cluster non-empty
    labels = labels[:, torch.randperm(n, generator=g)]
    sizes = torch.zeros(hkv, c, dtype=torch.long).scatter_add_(1, labels, torch.ones_like(labels))
    centroids = torch.randn(hkv, c, d, generator=g)
    return labels.to(device), sizes.to(device), centroids.to(device=device, dtype=dtype)


def random_qkv(b: int, hq: int, hkv: int, t: int, n: int, d: int, *, seed: int, device="cpu", dtype=torch.float32,
               kv_batch: int | None = None):
    g = torch.Generator().manual_seed(seed)
    kb = b if kv_batch is None else kv_batch
    q = torch.randn(b, hq, t, d, generator=g)
    k = torch.randn(kb, hkv, n, d, generator=g)
    v = torch.randn(kb, hkv, n, d, generator=g)
    return (x.to(device=device, dtype=dtype) for x in (q, k, v))
