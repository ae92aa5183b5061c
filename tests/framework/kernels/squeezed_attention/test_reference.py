"""Invariants of the pure-PyTorch references (the semantics every backend must reproduce)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from framework.kernels.squeezed_attention import (
    AttentionResult,
    Selection,
    centroid_lookup,
    cluster_contiguous_layout,
    dense_attention,
    hierarchical_lookup,
    merge_attention,
    sparse_attention,
    unpermute_indices,
)
from framework.kernels.squeezed_attention import reference as ref

from .helpers import random_index, random_qkv


def _sdpa(q, k, v, *, causal=False):
    g = q.shape[1] // k.shape[1]
    k = k.expand(q.shape[0], -1, -1, -1).repeat_interleave(g, dim=1)
    v = v.expand(q.shape[0], -1, -1, -1).repeat_interleave(g, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


@pytest.mark.parametrize("g,t", [(1, 1), (3, 5), (4, 2)])
def test_one_key_per_cluster_scores_equal_exact_softmax(g, t):
    hkv, n, d = 2, 37, 16
    q, k, _ = random_qkv(2, hkv * g, hkv, t, n, d, seed=1)
    sizes = torch.ones(hkv, n, dtype=torch.long)
    scores = ref.cluster_scores_reference(q, k[0], sizes, 1 / math.sqrt(d))
    exact = torch.softmax(torch.einsum("bhtd,hnd->bhtn", q, k[0].repeat_interleave(g, 0)) / math.sqrt(d), -1)
    expected = exact.view(2, hkv, g, t, n).mean(dim=(2, 3))
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-7)


def test_scores_stable_for_huge_logits_and_empty_clusters():
    q = torch.full((1, 1, 2, 16), 300.0)
    centroids = torch.randn(1, 5, 16) * 50
    sizes = torch.tensor([[3, 0, 2, 0, 1]])
    scores = ref.cluster_scores_reference(q, centroids, sizes, 0.25)
    assert torch.isfinite(scores).all()
    # probabilities weighted by sizes sum to one
    assert torch.allclose((scores * sizes).sum(-1), torch.ones(1, 1), atol=2e-2)  # fp32 ulp of ~1e5 logits


@pytest.mark.parametrize("g", [1, 3, 4])
def test_keep_every_key_equals_dense_sdpa(g):
    b, hkv, t, n, d = 2, 2, 3, 29, 32
    q, k, v = random_qkv(b, hkv * g, hkv, t, n, d, seed=2)
    labels, sizes, centroids = random_index(hkv, n, 5, d, seed=3)
    sel = centroid_lookup(q, centroids, sizes, labels, budget=1.0, backend="reference")
    assert (sel.key_counts == n).all()
    res = sparse_attention(q, k, v, sel, backend="reference")
    torch.testing.assert_close(res.out, _sdpa(q, k, v), rtol=1e-5, atol=1e-6)
    sel_thr = centroid_lookup(q, centroids, sizes, labels, threshold=-1.0, backend="reference")
    assert (sel_thr.key_counts == n).all()


def test_shared_context_kv_batch_one():
    q, k, v = random_qkv(3, 4, 2, 2, 17, 16, seed=4, kv_batch=1)
    sel = Selection(
        torch.arange(17, dtype=torch.int32).expand(3, 2, 17).contiguous(),
        torch.full((3, 2), 17, dtype=torch.int32),
        torch.zeros(3, 2, 1),
    )
    res = sparse_attention(q, k, v, sel, backend="reference")
    torch.testing.assert_close(res.out, _sdpa(q, k, v), rtol=1e-5, atol=1e-6)


def test_zero_selected_keys_gives_zero_and_minus_inf():
    q, k, v = random_qkv(1, 2, 2, 3, 10, 16, seed=5)
    sel = Selection(torch.zeros(1, 2, 4, dtype=torch.int32), torch.tensor([[0, 4]], dtype=torch.int32),
                    torch.zeros(1, 2, 3))
    sel.key_indices[0, 1] = torch.tensor([1, 3, 5, 7])
    res = sparse_attention(q, k, v, sel, backend="reference")
    assert torch.isneginf(res.lse[0, 0]).all() and (res.out[0, 0] == 0).all()
    assert torch.isfinite(res.lse[0, 1]).all()


def test_merge_equals_attention_over_concatenation():
    b, hq, hkv, t, n, m, d = 2, 6, 2, 4, 23, 9, 16
    q, k1, v1 = random_qkv(b, hq, hkv, t, n, d, seed=6)
    _, k2, v2 = random_qkv(b, hq, hkv, t, m, d, seed=7)
    labels, sizes, centroids = random_index(hkv, n, 6, d, seed=8)
    sel = centroid_lookup(q, centroids, sizes, labels, budget=0.4, backend="reference")
    sparse = sparse_attention(q, k1, v1, sel, backend="reference")
    dyn = dense_attention(q, k2, v2, causal=True, backend="reference")
    merged = merge_attention(sparse, dyn)
    # one masked attention over [fixed context | dynamic part]
    fixed_mask = ref.selection_mask(sel, n)[:, :, None, :].expand(b, hkv, t, n)
    rows = torch.arange(t)[:, None]
    dyn_mask = (torch.arange(m)[None, :] <= rows + (m - t))[None, None].expand(b, hkv, t, m)
    full = ref.masked_attention_reference(
        q, torch.cat([k1, k2], 2), torch.cat([v1, v2], 2), torch.cat([fixed_mask, dyn_mask], -1), 1 / math.sqrt(d)
    )
    torch.testing.assert_close(merged.out, full.out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(merged.lse, full.lse, rtol=1e-5, atol=1e-6)


def test_merge_with_empty_side():
    a = AttentionResult(torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3))
    empty = AttentionResult(torch.zeros(1, 2, 3, 8), torch.full((1, 2, 3), float("-inf")))
    m = merge_attention(a, empty)
    torch.testing.assert_close(m.out, a.out)
    torch.testing.assert_close(m.lse, a.lse)
    both = merge_attention(empty, empty)
    assert torch.isneginf(both.lse).all() and (both.out == 0).all()


@pytest.mark.parametrize("t,n", [(5, 5), (3, 11), (1, 7)])
def test_dense_causal_bottom_right(t, n):
    q, k, v = random_qkv(2, 4, 2, t, n, 16, seed=9)
    res = dense_attention(q, k, v, causal=True, backend="reference")
    mask = torch.ones(t, n, dtype=torch.bool).tril(diagonal=n - t)
    g = 2
    expected = F.scaled_dot_product_attention(
        q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1), attn_mask=mask
    )
    torch.testing.assert_close(res.out, expected, rtol=1e-5, atol=1e-6)


def test_threshold_selection_semantics():
    scores = torch.tensor([[[0.5, 0.1, 0.3]]])
    labels = torch.tensor([[0, 1, 2, 1, 0, 2, 2]])
    sel = ref.select_from_scores_reference(scores, labels, threshold=0.2)
    assert sel.key_counts.tolist() == [[5]]
    assert sel.key_indices[0, 0, :5].tolist() == [0, 2, 4, 5, 6]
    always = torch.tensor([False, False, False, True, False, False, False])
    sel = ref.select_from_scores_reference(scores, labels, threshold=0.4, always_keep=always)
    assert sel.key_indices[0, 0, : sel.key_counts[0, 0]].tolist() == [0, 3, 4]


def test_budget_selection_cuts_last_cluster_and_breaks_ties_by_cluster_id():
    scores = torch.tensor([[[0.2, 0.5, 0.2]]])
    labels = torch.tensor([[0, 1, 2, 1, 0, 2, 2, 0]])
    # K = ceil(0.5 * 8) = 4: cluster 1 (2 keys) then cluster 0 (tie with 2, lower id) cut to its first 2 keys
    sel = ref.select_from_scores_reference(scores, labels, budget=0.5)
    assert sel.key_indices[0, 0, : sel.key_counts[0, 0]].tolist() == [0, 1, 3, 4]
    always = torch.zeros(8, dtype=torch.bool)
    always[7] = True  # counted within the budget
    sel = ref.select_from_scores_reference(scores, labels, budget=0.5, always_keep=always)
    assert sel.key_indices[0, 0, : sel.key_counts[0, 0]].tolist() == [0, 1, 3, 7]


def test_budget_keeps_exactly_k_keys():
    q, _, _ = random_qkv(2, 6, 3, 4, 50, 16, seed=10)
    labels, sizes, centroids = random_index(3, 50, 7, 16, seed=11)
    for budget in (0.01, 0.1, 0.33, 0.99, 1.0):
        sel = centroid_lookup(q, centroids, sizes, labels, budget=budget, backend="reference")
        assert (sel.key_counts == max(1, math.ceil(budget * 50 - 1e-6))).all()
        # the kept keys are the best clusters: every fully kept cluster scores >= every skipped one
        for bb in range(2):
            for h in range(3):
                kept = set(sel.key_indices[bb, h, : sel.key_counts[bb, h]].tolist())
                s_kept = [sel.cluster_scores[bb, h, labels[h, i]] for i in kept]
                s_out = [sel.cluster_scores[bb, h, labels[h, i]] for i in range(50) if i not in kept]
                if s_kept and s_out:
                    assert min(s_kept) >= max(s_out)


def test_hierarchical_with_first_level_keeping_everything_equals_single_level():
    b, g, hkv, t, n, d, c2 = 2, 3, 2, 3, 60, 16, 12
    q, _, _ = random_qkv(b, g * hkv, hkv, t, n, d, seed=12)
    labels, sizes, fine = random_index(hkv, n, c2, d, seed=13)
    fine_to_coarse = torch.randint(0, 4, (hkv, c2), generator=torch.Generator().manual_seed(0))
    coarse_sizes = torch.zeros(hkv, 4, dtype=torch.long).scatter_add_(1, fine_to_coarse, sizes)
    coarse = torch.randn(hkv, 4, d)
    for kw in ({"threshold": 0.01}, {"budget": 0.3}):
        single = centroid_lookup(q, fine, sizes, labels, backend="reference", **kw)
        hier = hierarchical_lookup(q, coarse, coarse_sizes, fine_to_coarse, fine, sizes, labels,
                                   coarse_threshold=float("-inf"), backend="reference", **kw)
        torch.testing.assert_close(hier.cluster_scores, single.cluster_scores)
        assert torch.equal(hier.key_counts, single.key_counts)
        assert torch.equal(hier.key_indices, single.key_indices)


def test_hierarchical_prunes_dead_clusters_and_renormalizes():
    hkv, n, d, c2 = 1, 40, 16, 8
    q, _, _ = random_qkv(1, 1, 1, 2, n, d, seed=14)
    labels, sizes, fine = random_index(hkv, n, c2, d, seed=15)
    fine_to_coarse = torch.tensor([[0, 0, 1, 1, 2, 2, 3, 3]])
    coarse_sizes = torch.zeros(1, 4, dtype=torch.long).scatter_add_(1, fine_to_coarse, sizes)
    coarse = torch.randn(1, 4, d)
    coarse_scores = ref.cluster_scores_reference(q, coarse, coarse_sizes, d ** -0.5)
    thr = coarse_scores.median().item()
    sel = hierarchical_lookup(q, coarse, coarse_sizes, fine_to_coarse, fine, sizes, labels,
                              coarse_threshold=thr, threshold=-1.0, backend="reference")
    alive_coarse = coarse_scores[0, 0] > thr
    alive_fine = alive_coarse[fine_to_coarse[0]]
    kept = sel.key_indices[0, 0, : sel.key_counts[0, 0]]
    assert alive_fine[labels[0, kept]].all()
    assert int(sel.key_counts) == int(sizes[0, alive_fine].sum())
    assert (sel.cluster_scores[0, 0, ~alive_fine] == 0).all()
    # survivors' probabilities are renormalized over survivors only
    torch.testing.assert_close((sel.cluster_scores[0, 0] * sizes[0]).sum(), torch.tensor(1.0), rtol=1e-5, atol=1e-6)


def test_layout_permutation_round_trip():
    b, hkv, n, d, c = 1, 2, 30, 16, 5
    _, k, v = random_qkv(1, 2, hkv, 1, n, d, seed=16)
    labels, sizes, centroids = random_index(hkv, n, c, d, seed=17)
    always = torch.zeros(n, dtype=torch.bool)
    always[-4:] = True
    lay = cluster_contiguous_layout(k, v, labels, c, always_keep=always)
    assert lay.num_always == 4 and lay.always_keep[:, -4:].all() and not lay.always_keep[:, :-4].any()
    assert (lay.key_labels[:, :-4].diff(dim=1) >= 0).all()
    q, _, _ = random_qkv(2, 4, hkv, 3, n, d, seed=18)
    sel = centroid_lookup(q, centroids, sizes, labels, budget=0.4, always_keep=always, backend="reference")
    sel_p = centroid_lookup(q, centroids, sizes, lay.key_labels, budget=0.4, layout=lay, backend="reference")
    assert torch.equal(sel.key_counts, sel_p.key_counts)
    for bb in range(2):
        for h in range(hkv):
            cnt = int(sel.key_counts[bb, h])
            orig = unpermute_indices(lay, sel_p.key_indices)[bb, h, :cnt].sort().values
            assert torch.equal(orig, sel.key_indices[bb, h, :cnt].long())
    a = sparse_attention(q, k, v, sel, backend="reference")
    p = sparse_attention(q, lay.k, lay.v, sel_p, backend="reference")
    torch.testing.assert_close(a.out, p.out, rtol=1e-5, atol=1e-6)
