"""Triton kernels against the PyTorch references (CPU interpreter; small shapes, lengths not powers of two)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from framework.kernels.squeezed_attention import (
    cluster_contiguous_layout,
    centroid_lookup,
    dense_attention,
    hierarchical_lookup,
    merge_attention,
    select_from_scores,
    sparse_attention,
)
from framework.kernels.squeezed_attention import reference as ref

from .helpers import INTERPRET, random_index, random_qkv

pytestmark = pytest.mark.skipif(not INTERPRET, reason="CPU interpreter tests (TRITON_INTERPRET=1)")


def _same_selection(a, b):
    assert torch.equal(a.key_counts, b.key_counts), (a.key_counts, b.key_counts)
    for i in range(a.key_counts.shape[0]):
        for j in range(a.key_counts.shape[1]):
            cnt = int(a.key_counts[i, j])
            assert torch.equal(a.key_indices[i, j, :cnt], b.key_indices[i, j, :cnt])
            assert (a.key_indices[i, j, cnt:] == 0).all()


def _check_lookup(q, cent, sizes, labels, **kw):
    tri = centroid_lookup(q, cent, sizes, labels, backend="triton", **kw)
    refr = centroid_lookup(q, cent, sizes, labels, backend="reference", **kw)
    torch.testing.assert_close(tri.cluster_scores, refr.cluster_scores, rtol=1e-4, atol=1e-7)
    # selection is a discontinuous function of the scores: compare on the kernel's own scores
    sel_ref = select_from_scores(tri.cluster_scores, labels, backend="reference",
                                 **{k_: v_ for k_, v_ in kw.items() if k_ != "layout"})
    if "layout" not in kw:
        _same_selection(tri, sel_ref)
    return tri


@pytest.mark.parametrize(
    "b,g,hkv,t,n,c",
    [(1, 1, 2, 1, 45, 6), (3, 3, 2, 1, 70, 9), (2, 4, 1, 7, 33, 5), (2, 3, 2, 25, 61, 11)],
)
def test_lookup_and_attention_match_reference(b, g, hkv, t, n, c):
    d = 16
    q, k, v = random_qkv(b, g * hkv, hkv, t, n, d, seed=b * 100 + t)
    labels, sizes, cent = random_index(hkv, n, c, d, seed=n)
    always = torch.zeros(n, dtype=torch.bool)
    always[-3:] = True
    for kw in ({"budget": 0.27}, {"budget": 0.27, "always_keep": always}, {"threshold": 1.0 / n}):
        sel = _check_lookup(q, cent, sizes, labels, **kw)
        tri = sparse_attention(q, k, v, sel, backend="triton")
        refr = sparse_attention(q, k, v, sel, backend="reference")
        torch.testing.assert_close(tri.out, refr.out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(tri.lse, refr.lse, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t", [1, 6])
def test_head_with_zero_keys_and_head_with_all_keys(t):
    b, g, hkv, n, d, c = 2, 3, 2, 37, 16, 5
    q, k, v = random_qkv(b, g * hkv, hkv, t, n, d, seed=7)
    labels, sizes, cent = random_index(hkv, n, c, d, seed=8)
    thr = torch.tensor([2.0, -1.0])  # head 0: nothing scores above 2; head 1: everything above -1
    sel = _check_lookup(q, cent, sizes, labels, threshold=thr)
    assert (sel.key_counts[:, 0] == 0).all() and (sel.key_counts[:, 1] == n).all()
    res = sparse_attention(q, k, v, sel, backend="triton")
    assert torch.isneginf(res.lse[:, :g]).all() and (res.out[:, :g] == 0).all()
    dense = F.scaled_dot_product_attention(q[:, g:], k[:, 1:2].expand(-1, g, -1, -1), v[:, 1:2].expand(-1, g, -1, -1))
    torch.testing.assert_close(res.out[:, g:], dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("g", [1, 3, 4])
@pytest.mark.parametrize("t", [1, 9])
def test_every_key_selected_equals_dense_sdpa(g, t):
    b, hkv, n, d = 2, 2, 41, 32
    q, k, v = random_qkv(b, g * hkv, hkv, t, n, d, seed=g * 10 + t)
    labels, sizes, cent = random_index(hkv, n, 4, d, seed=3)
    sel = centroid_lookup(q, cent, sizes, labels, budget=1.0, backend="triton")
    assert (sel.key_counts == n).all()
    res = sparse_attention(q, k, v, sel, backend="triton")
    expected = F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1))
    torch.testing.assert_close(res.out, expected, rtol=1e-5, atol=1e-6)


def test_shared_context_and_fp16():
    b, g, hkv, t, n, d = 3, 2, 2, 1, 50, 16
    q, k, v = random_qkv(b, g * hkv, hkv, t, n, d, seed=11, kv_batch=1, dtype=torch.float16)
    labels, sizes, cent = random_index(hkv, n, 6, d, seed=12, dtype=torch.float16)
    sel = centroid_lookup(q, cent, sizes, labels, budget=0.5, backend="triton")
    tri = sparse_attention(q, k, v, sel, backend="triton")
    refr = sparse_attention(q, k, v, sel, backend="reference")
    torch.testing.assert_close(tri.out.float(), refr.out.float(), rtol=2e-3, atol=2e-3)


def test_layout_path_equals_label_path():
    b, g, hkv, t, n, d, c = 2, 2, 2, 3, 47, 16, 6
    q, k, v = random_qkv(b, g * hkv, hkv, t, n, d, seed=13)
    labels, sizes, cent = random_index(hkv, n, c, d, seed=14)
    always = torch.zeros(n, dtype=torch.bool)
    always[-5:] = True
    lay = cluster_contiguous_layout(k, v, labels, c, always_keep=always)
    for kw in ({"budget": 0.4}, {"threshold": 0.02}):
        plain = centroid_lookup(q, cent, sizes, lay.key_labels, always_keep=lay.always_keep, backend="triton", **kw)
        fast = centroid_lookup(q, cent, sizes, lay.key_labels, layout=lay, backend="triton", **kw)
        _same_selection(fast, plain)
        a = sparse_attention(q, lay.k, lay.v, fast, backend="triton")
        r = sparse_attention(q, k, v, centroid_lookup(q, cent, sizes, labels, always_keep=always,
                                                      backend="reference", **kw), backend="reference")
        torch.testing.assert_close(a.out, r.out, rtol=1e-5, atol=1e-5)


def test_threshold_without_sync_pads_to_n():
    b, g, hkv, n, d, c = 2, 2, 2, 45, 16, 6
    q, k, v = random_qkv(b, g * hkv, hkv, 1, n, d, seed=31)
    labels, sizes, cent = random_index(hkv, n, c, d, seed=32)
    always = torch.zeros(n, dtype=torch.bool)
    always[-4:] = True
    lay = cluster_contiguous_layout(k, v, labels, c, always_keep=always)
    for kw in ({"layout": lay}, {"always_keep": lay.always_keep}):
        exact = centroid_lookup(q, cent, sizes, lay.key_labels, threshold=0.02, backend="triton", **kw)
        free = centroid_lookup(q, cent, sizes, lay.key_labels, threshold=0.02, sync=False, backend="triton", **kw)
        assert free.key_indices.shape[-1] == n
        _same_selection(free, exact)


@pytest.mark.parametrize("single_max", [2, 1024])  # streamed tiles vs whole row in registers
def test_budget_ties_and_cut_cluster_match_reference(single_max, monkeypatch):
    from framework.kernels.squeezed_attention import triton_ops

    monkeypatch.setitem(triton_ops._INTERPRET_CONFIG, "select_single_max", single_max)
    monkeypatch.setitem(triton_ops._INTERPRET_CONFIG, "select_block_c", 4)
    b, hkv, c, n = 2, 2, 8, 40
    labels, _, _ = random_index(hkv, n, c, 16, seed=15)
    scores = torch.tensor([0.3, 0.1, 0.3, 0.05, 0.3, 0.2, 0.0, 0.1]).expand(b, hkv, c).contiguous()
    for budget in (0.1, 0.33, 0.5, 0.77, 1.0):
        tri = select_from_scores(scores, labels, budget=budget, backend="triton")
        refr = select_from_scores(scores, labels, budget=budget, backend="reference")
        _same_selection(tri, refr)
    for thr in (0.05, 0.2, -1.0):
        _same_selection(select_from_scores(scores, labels, threshold=thr, backend="triton"),
                        select_from_scores(scores, labels, threshold=thr, backend="reference"))


def test_hierarchical_matches_reference_and_reduces_to_single_level():
    b, g, hkv, n, d, c2, c1 = 2, 2, 2, 64, 16, 12, 4
    labels, sizes, fine = random_index(hkv, n, c2, d, seed=16)
    f2c = torch.randint(0, c1, (hkv, c2), generator=torch.Generator().manual_seed(1))
    f2c[:, :c1] = torch.arange(c1)
    coarse_sizes = torch.zeros(hkv, c1, dtype=torch.long).scatter_add_(1, f2c, sizes)
    coarse = torch.randn(hkv, c1, d, generator=torch.Generator().manual_seed(2))
    for t in (1, 40):
        q, k, v = random_qkv(b, g * hkv, hkv, t, n, d, seed=17 + t)
        cs = ref.cluster_scores_reference(q, coarse, coarse_sizes, d ** -0.5).flatten().sort().values
        mid = cs.numel() // 2
        cthr = float(cs[mid] + cs[mid + 1]) / 2  # between two scores: no borderline rounding decision
        for kw in ({"budget": 0.3}, {"threshold": 0.01}):
            tri = hierarchical_lookup(q, coarse, coarse_sizes, f2c, fine, sizes, labels, coarse_threshold=cthr,
                                      backend="triton", **kw)
            refr = hierarchical_lookup(q, coarse, coarse_sizes, f2c, fine, sizes, labels, coarse_threshold=cthr,
                                       backend="reference", **kw)
            torch.testing.assert_close(tri.cluster_scores, refr.cluster_scores, rtol=1e-4, atol=1e-7)
            _same_selection(tri, refr)
            everything = hierarchical_lookup(q, coarse, coarse_sizes, f2c, fine, sizes, labels,
                                             coarse_threshold=float("-inf"), backend="triton", **kw)
            single = centroid_lookup(q, fine, sizes, labels, backend="triton", **kw)
            torch.testing.assert_close(everything.cluster_scores, single.cluster_scores, rtol=1e-5, atol=1e-8)
            _same_selection(everything, single)


@pytest.mark.parametrize("t,n", [(1, 37), (6, 29), (13, 13)])
def test_dense_kernel_and_merge(t, n):
    b, g, hkv, d = 2, 3, 2, 16
    q, k, v = random_qkv(b, g * hkv, hkv, t, n, d, seed=t)
    for causal in (False, True):
        tri = dense_attention(q, k, v, causal=causal, backend="triton")
        refr = dense_attention(q, k, v, causal=causal, backend="reference")
        torch.testing.assert_close(tri.out, refr.out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(tri.lse, refr.lse, rtol=1e-5, atol=1e-5)
    # sparse fixed context + dense causal dynamic part == one masked attention over the concatenation
    _, kf, vf = random_qkv(b, g * hkv, hkv, 1, 44, d, seed=99)
    labels, sizes, cent = random_index(hkv, 44, 5, d, seed=5)
    sel = centroid_lookup(q, cent, sizes, labels, budget=0.35, backend="triton")
    merged = merge_attention(sparse_attention(q, kf, vf, sel, backend="triton"),
                             dense_attention(q, k, v, causal=True, backend="triton"), backend="triton")
    fixed_mask = ref.selection_mask(sel, 44)[:, :, None, :].expand(b, hkv, t, 44)
    dyn_mask = torch.ones(t, n, dtype=torch.bool).tril(n - t)[None, None].expand(b, hkv, t, n)
    full = ref.masked_attention_reference(q, torch.cat([kf, k], 2), torch.cat([vf, v], 2),
                                          torch.cat([fixed_mask, dyn_mask], -1), 1 / math.sqrt(d))
    torch.testing.assert_close(merged.out, full.out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged.lse, full.lse, rtol=1e-5, atol=1e-5)


def test_bf16_rejected_in_interpreter():
    q, k, v = random_qkv(1, 2, 2, 1, 20, 16, seed=0, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bfloat16 is not supported by the Triton CPU interpreter"):
        dense_attention(q, k, v, causal=False, backend="triton")


def test_static_index_cache_sees_new_and_modified_labels():
    """Labels of equal shape (possibly reusing freed storage) or changed in place must not hit a stale cache."""
    b, g, hkv, n, d, c = 1, 2, 2, 40, 16, 5
    q, _, _ = random_qkv(b, g * hkv, hkv, 1, n, d, seed=21)
    _, sizes, cent = random_index(hkv, n, c, d, seed=22)
    for seed in (23, 24):
        labels = torch.randint(0, c, (hkv, n), generator=torch.Generator().manual_seed(seed))
        sizes = torch.zeros(hkv, c, dtype=torch.long).scatter_add_(1, labels, torch.ones_like(labels))
        _same_selection(centroid_lookup(q, cent, sizes, labels, budget=0.3, backend="triton"),
                        centroid_lookup(q, cent, sizes, labels, budget=0.3, backend="reference"))
        labels[:, :10] = (labels[:, :10] + 1) % c  # in place: version counter moves
        sizes = torch.zeros(hkv, c, dtype=torch.long).scatter_add_(1, labels, torch.ones_like(labels))
        _same_selection(centroid_lookup(q, cent, sizes, labels, budget=0.3, backend="triton"),
                        centroid_lookup(q, cent, sizes, labels, budget=0.3, backend="reference"))
        del labels


def test_parallel_expansion_matches_serial_selection(monkeypatch):
    """Layout path: the parallel take+expand kernel (several cluster blocks) equals the serial select kernel."""
    from framework.kernels.squeezed_attention import triton_ops

    b, g, hkv, n, d, c1, c = 2, 2, 2, 58, 16, 3, 9
    q, k, v = random_qkv(b, g * hkv, hkv, 1, n, d, seed=41)
    labels, sizes, cent = random_index(hkv, n, c, d, seed=42)
    always = torch.zeros(n, dtype=torch.bool)
    always[-6:] = True
    lay = cluster_contiguous_layout(k, v, labels, c, always_keep=always)
    f2c = torch.arange(c).remainder(c1).expand(hkv, c).contiguous()
    coarse_sizes = torch.zeros(hkv, c1, dtype=torch.long).scatter_add_(1, f2c, sizes)
    coarse = torch.randn(hkv, c1, d, generator=torch.Generator().manual_seed(3))
    ties = torch.tensor([0.3, 0.1, 0.3, 0.05, 0.3, 0.2, 0.0, 0.1, 0.3]).expand(b, hkv, c).contiguous()

    def run():
        out = [centroid_lookup(q, cent, sizes, lay.key_labels, layout=lay, backend="triton", **kw)
               for kw in ({"budget": 0.3}, {"budget": 0.77}, {"budget": 1.0}, {"threshold": 0.03, "sync": False})]
        out += [select_from_scores(ties, lay.key_labels, layout=lay, budget=bud, backend="triton")
                for bud in (0.2, 0.5)]
        out += [hierarchical_lookup(q, coarse, coarse_sizes, f2c, cent, sizes, lay.key_labels, layout=lay,
                                    coarse_threshold=1.0 / n, backend="triton", **kw)
                for kw in ({"budget": 0.3}, {"threshold": 0.01, "sync": False})]
        return out

    parallel = run()
    monkeypatch.setitem(triton_ops.CONFIG, "parallel_expand", 0)
    serial = run()
    for a, s_ in zip(parallel, serial):
        _same_selection(a, s_)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_merge_kernel_equals_reference_with_empty_sides(dtype):
    from framework.kernels.squeezed_attention import AttentionResult

    g = torch.Generator().manual_seed(11)
    b, h, t, d = 2, 3, 37, 32  # 222 rows: not a multiple of the row block
    oa, ob = (torch.randn(b, h, t, d, generator=g).to(dtype) for _ in range(2))
    la, lb = (torch.randn(b, h, t, generator=g) * 30 for _ in range(2))
    la[0, 0, :5] = float("-inf")  # a side with no key is neutral
    lb[0, 1, :5] = float("-inf")
    la[1, 2, :3] = lb[1, 2, :3] = float("-inf")  # both empty: out 0, lse -inf
    oa[0, 0, :5] = 0
    ob[0, 1, :5] = 0
    a, c = AttentionResult(oa, la), AttentionResult(ob, lb)
    tri = merge_attention(a, c, backend="triton")
    refr = merge_attention(a, c, backend="reference")
    tol = 1e-6 if dtype == torch.float32 else 1e-3
    torch.testing.assert_close(tri.out, refr.out, rtol=tol, atol=tol)
    torch.testing.assert_close(tri.lse, refr.lse, rtol=1e-6, atol=1e-6)
    assert torch.equal(tri.out[0, 0, :5], ob[0, 0, :5]) or torch.allclose(tri.out[0, 0, :5], ob[0, 0, :5])
    assert (tri.out[1, 2, :3] == 0).all() and torch.isneginf(tri.lse[1, 2, :3]).all()


@pytest.mark.parametrize("first_dense", [False, True])
def test_union_decode_equals_merge_of_two_attentions(first_dense):
    """Two key sources in one partial buffer + one reduce == merge of two separate attentions (and the reference)."""
    from framework.kernels.squeezed_attention import Selection, sparse_attention_union

    b, g, hkv, d, n1, n2 = 2, 3, 2, 16, 53, 11
    q, k1, v1 = random_qkv(b, g * hkv, hkv, 1, n1, d, seed=21, kv_batch=1)  # shared fixed context
    _, k2, v2 = random_qkv(b, g * hkv, hkv, 1, n2, d, seed=22)  # per-sequence tail
    labels, sizes, cent = random_index(hkv, n1, 6, d, seed=23)
    sel1 = None if first_dense else centroid_lookup(q, cent, sizes, labels, budget=0.4, backend="triton")
    counts = torch.tensor([[7, 11], [0, 3]], dtype=torch.int32)  # ragged tail lengths, one empty
    sel2 = Selection(torch.arange(n2, dtype=torch.int32).expand(b, hkv, n2).contiguous(), counts,
                     torch.zeros(b, hkv, 0))
    got = sparse_attention_union(q, (k1, v1, sel1), (k2, v2, sel2), backend="triton")
    ref_ = sparse_attention_union(q, (k1, v1, sel1), (k2, v2, sel2), backend="reference")
    first = (dense_attention(q, k1, v1, causal=False, backend="triton") if first_dense
             else sparse_attention(q, k1, v1, sel1, backend="triton"))
    merged = merge_attention(first, sparse_attention(q, k2, v2, sel2, backend="triton"), backend="triton")
    for other in (ref_, merged):
        torch.testing.assert_close(got.out, other.out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.lse, other.lse, rtol=1e-5, atol=1e-5)


class _PoisonedTorch:
    """``torch`` for ``triton_ops`` whose ``empty``/``empty_like`` buffers hold NaN / -7777 instead of whatever the
    allocator hands back (often the previous call's results), so a kernel that reads a slot nobody wrote fails."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def _poison(t):
        if t.dtype.is_floating_point:
            return t.fill_(float("nan"))
        return t.fill_(True if t.dtype == torch.bool else max(-7777, torch.iinfo(t.dtype).min))

    def empty(self, *args, **kwargs):
        return self._poison(torch.empty(*args, **kwargs))

    def empty_like(self, *args, **kwargs):
        return self._poison(torch.empty_like(*args, **kwargs))


def _decode_cases(monkeypatch):
    """Every decode-step kernel call of the model (layout lookups in both modes, ties at the budget cut, sparse,
    dense and two-source union attention), returned as tensors to compare across decode paths."""
    from framework.kernels.squeezed_attention import Selection, sparse_attention_union

    b, g, hkv, n, d, c = 3, 4, 2, 71, 16, 13
    q, k, v = random_qkv(b, g * hkv, hkv, 1, n, d, seed=51, kv_batch=1)
    labels, sizes, cent = random_index(hkv, n, c, d, seed=52)
    sizes[1, 3] = 0  # an empty cluster: scores 0 and leaves the denominator
    labels[1][labels[1] == 3] = 4
    sizes = torch.zeros(hkv, c, dtype=torch.long).scatter_add_(1, labels, torch.ones_like(labels))
    always = torch.zeros(n, dtype=torch.bool)
    always[-7:] = True
    lay = cluster_contiguous_layout(k, v, labels, c, always_keep=always)
    out = []
    for kw in ({"budget": 0.1}, {"budget": 0.3}, {"budget": 1.0}, {"threshold": 0.05, "sync": False},
               {"threshold": torch.tensor([0.02, 0.1]), "sync": False}):
        sel = centroid_lookup(q, cent, sizes, lay.key_labels, layout=lay, backend="triton", **kw)
        att = sparse_attention(q, lay.k, lay.v, sel, backend="triton")
        out += [sel.key_indices, sel.key_counts, sel.cluster_scores, att.out, att.lse]
    # tied centroids: several clusters share the cut score
    tied = cent.clone()
    tied[:, 5] = tied[:, 2]
    tied[:, 9] = tied[:, 2]
    sel = centroid_lookup(q, tied, sizes, lay.key_labels, layout=lay, budget=0.25, backend="triton")
    out += [sel.key_indices, sel.key_counts, sel.cluster_scores]
    _, k2, v2 = random_qkv(b, g * hkv, hkv, 1, 9, d, seed=53)
    tail = Selection(torch.arange(9, dtype=torch.int32).expand(b, hkv, 9).contiguous(),
                     torch.tensor([[9, 4], [0, 2], [1, 9]], dtype=torch.int32), torch.zeros(b, hkv, 0))
    for first in ((lay.k, lay.v, sel), (lay.k, lay.v, None)):
        u = sparse_attention_union(q, first, (k2, v2, tail), backend="triton")
        out += [u.out, u.lse]
    dense = dense_attention(q, k, v, causal=False, backend="triton")
    return out + [dense.out, dense.lse]


def test_fused_decode_path_equals_split_path(monkeypatch):
    """The fused decode kernels (one lookup launch, reduce inside the attention kernel) give the same selection,
    scores and attention as the split launches (which the other tests check against the PyTorch reference), and
    leave their counters at zero (two calls in a row agree)."""
    from framework.kernels.squeezed_attention import decode_path, set_decode_path, triton_ops

    monkeypatch.setitem(triton_ops._INTERPRET_CONFIG, "lookup_block_c", 4)  # several splits per (batch, head)
    monkeypatch.setitem(triton_ops.CONFIG, "fused_decode", 0)
    monkeypatch.setattr(triton_ops, "torch", _PoisonedTorch())
    split = _decode_cases(monkeypatch)
    set_decode_path("fused")
    assert decode_path() == "fused"
    fused = _decode_cases(monkeypatch)
    again = _decode_cases(monkeypatch)
    for a, f, f2 in zip(split, fused, again):
        if a.dtype.is_floating_point:
            torch.testing.assert_close(f, a, rtol=1e-5, atol=1e-6, equal_nan=True)
        else:
            assert torch.equal(f, a)
        assert torch.equal(f, f2)
    assert all(int(buf.abs().sum()) == 0 for buf in triton_ops._LOCKS.values())
    with pytest.raises(ValueError, match="decode path must be one of"):
        set_decode_path("persistent")


def test_fused_lookup_matches_reference_selection(monkeypatch):
    """Fused path against the PyTorch reference directly (scores; selection on the kernel's own scores)."""
    from framework.kernels.squeezed_attention import triton_ops, unpermute_indices

    monkeypatch.setitem(triton_ops.CONFIG, "fused_decode", 1)
    monkeypatch.setitem(triton_ops._INTERPRET_CONFIG, "lookup_block_c", 4)
    monkeypatch.setattr(triton_ops, "torch", _PoisonedTorch())
    b, g, hkv, n, d, c = 2, 3, 2, 64, 16, 10
    q, k, v = random_qkv(b, g * hkv, hkv, 1, n, d, seed=61)
    labels, sizes, cent = random_index(hkv, n, c, d, seed=62)
    always = torch.zeros(n, dtype=torch.bool)
    always[-5:] = True
    lay = cluster_contiguous_layout(k, v, labels, c, always_keep=always)
    for kw in ({"budget": 0.2}, {"budget": 0.6}, {"threshold": 0.04, "sync": False}):
        tri = centroid_lookup(q, cent, sizes, lay.key_labels, layout=lay, backend="triton", **kw)
        refr = centroid_lookup(q, cent, sizes, labels, always_keep=always, backend="reference", **kw)
        torch.testing.assert_close(tri.cluster_scores, refr.cluster_scores, rtol=1e-4, atol=1e-7)
        rule = {k_: v_ for k_, v_ in kw.items() if k_ != "sync"}
        own = select_from_scores(tri.cluster_scores, labels, always_keep=always, backend="reference", **rule)
        assert torch.equal(tri.key_counts, own.key_counts)
        for i in range(b):
            for h in range(hkv):
                cnt = int(tri.key_counts[i, h])
                got = unpermute_indices(lay, tri.key_indices[:, :, :cnt])[i, h].sort().values
                assert torch.equal(got, own.key_indices[i, h, :cnt].long())
        att = sparse_attention(q, lay.k, lay.v, tri, backend="triton")
        ref_att = sparse_attention(q, k, v, own, backend="reference")
        torch.testing.assert_close(att.out, ref_att.out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(att.lse, ref_att.lse, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block", [4, 32])  # several blocks per row / one block
def test_parallel_compaction_equals_serial(block, monkeypatch):
    """Hierarchical first level: block counts + prefix (parallel) == one serial program, with and without a layout
    (the layout path now takes the parallel expansion with the survivors' flags)."""
    from framework.kernels.squeezed_attention import triton_ops

    monkeypatch.setitem(triton_ops._INTERPRET_CONFIG, "compact_block", block)
    monkeypatch.setattr(triton_ops, "torch", _PoisonedTorch())
    b, g, hkv, n, d, c2, c1 = 2, 2, 2, 90, 16, 17, 5
    labels, sizes, fine = random_index(hkv, n, c2, d, seed=71)
    f2c = torch.randint(0, c1, (hkv, c2), generator=torch.Generator().manual_seed(72))
    f2c[:, :c1] = torch.arange(c1)
    coarse_sizes = torch.zeros(hkv, c1, dtype=torch.long).scatter_add_(1, f2c, sizes)
    coarse = torch.randn(hkv, c1, d, generator=torch.Generator().manual_seed(73))
    q, k, v = random_qkv(b, g * hkv, hkv, 1, n, d, seed=74)
    always = torch.zeros(n, dtype=torch.bool)
    always[-4:] = True
    lay = cluster_contiguous_layout(k, v, labels, c2, always_keep=always)
    cs = ref.cluster_scores_reference(q, coarse, coarse_sizes, d ** -0.5).flatten().sort().values
    cthr = float(cs[cs.numel() // 2] + cs[cs.numel() // 2 + 1]) / 2

    def run():
        return [hierarchical_lookup(q, coarse, coarse_sizes, f2c, fine, sizes, lay.key_labels, coarse_threshold=cthr,
                                    backend="triton", **extra, **kw)
                for extra in ({"layout": lay}, {"always_keep": lay.always_keep})
                for kw in ({"budget": 0.3}, {"threshold": 0.01, "sync": False})]

    parallel = run()
    monkeypatch.setitem(triton_ops.CONFIG, "parallel_compact", 0)
    serial = run()
    for a, s_ in zip(parallel, serial):
        torch.testing.assert_close(a.cluster_scores, s_.cluster_scores, rtol=0, atol=0)
        _same_selection(a, s_)
    refr = hierarchical_lookup(q, coarse, coarse_sizes, f2c, fine, sizes, lay.key_labels, coarse_threshold=cthr,
                               always_keep=lay.always_keep, backend="reference", budget=0.3)
    _same_selection(parallel[2], refr)
