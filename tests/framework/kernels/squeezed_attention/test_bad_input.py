"""Bad input raises ValueError naming the value and what is allowed, before any kernel runs."""

from __future__ import annotations

import pytest
import torch

from framework.kernels.squeezed_attention import centroid_lookup, dense_attention, hierarchical_lookup, sparse_attention

from .helpers import random_index, random_qkv


def _lookup_args(d=16, dtype=torch.float32):
    q, _, _ = random_qkv(1, 4, 2, 2, 20, d, seed=0, dtype=dtype)
    labels, sizes, centroids = random_index(2, 20, 4, d, seed=1)
    return q, centroids, sizes, labels


@pytest.mark.parametrize("budget", [0.0, -0.1, 1.5, float("nan")])
def test_budget_outside_unit_interval(budget):
    q, c, s, l = _lookup_args()
    with pytest.raises(ValueError, match=r"budget must be .*\(0, 1\]"):
        centroid_lookup(q, c, s, l, budget=budget, backend="reference")


def test_threshold_and_budget_exclusive():
    q, c, s, l = _lookup_args()
    with pytest.raises(ValueError, match="exactly one of threshold / budget"):
        centroid_lookup(q, c, s, l, backend="reference")
    with pytest.raises(ValueError, match="exactly one of threshold / budget"):
        centroid_lookup(q, c, s, l, threshold=0.1, budget=0.5, backend="reference")


def test_unsupported_head_dim():
    q, k, v = random_qkv(1, 2, 2, 3, 10, 24, seed=2)
    with pytest.raises(ValueError, match=r"head dim must be one of \(16, 32, 64, 128, 256\), got 24"):
        dense_attention(q, k, v, causal=False, backend="reference")


def test_unsupported_dtype():
    q, k, v = random_qkv(1, 2, 2, 3, 10, 16, seed=3)
    with pytest.raises(ValueError, match="dtype must be one of"):
        dense_attention(q.double(), k.double(), v.double(), causal=False, backend="reference")
    with pytest.raises(ValueError, match="share a dtype"):
        dense_attention(q, k.half(), v.half(), causal=False, backend="reference")


def test_gqa_mismatch_and_bad_backend():
    q, c, s, l = _lookup_args()
    with pytest.raises(ValueError, match="multiple of KV heads"):
        centroid_lookup(q[:, :3], c, s, l, budget=0.5, backend="reference")
    with pytest.raises(ValueError, match="backend must be one of"):
        centroid_lookup(q, c, s, l, budget=0.5, backend="cuda")


def test_shape_mismatches():
    q, c, s, l = _lookup_args()
    with pytest.raises(ValueError, match="cluster sizes"):
        centroid_lookup(q, c, s[:, :2], l, budget=0.5, backend="reference")
    with pytest.raises(ValueError, match="always_keep"):
        centroid_lookup(q, c, s, l, budget=0.5, always_keep=torch.ones(7, dtype=torch.bool), backend="reference")
    with pytest.raises(ValueError, match="fine_to_coarse"):
        hierarchical_lookup(q, c, s, torch.zeros(2, 3, dtype=torch.long), c, s, l, coarse_threshold=0.0,
                            budget=0.5, backend="reference")
    qq, k, v = random_qkv(2, 4, 2, 1, 10, 16, seed=4)
    sel = centroid_lookup(q, c, s, l, budget=0.5, backend="reference")
    with pytest.raises(ValueError, match="selection.key_indices"):
        sparse_attention(qq, k, v, sel, backend="reference")
    with pytest.raises(ValueError, match="k/v batch"):
        sparse_attention(qq, torch.cat([k, k[:1]]), torch.cat([v, v[:1]]), sel, backend="reference")
