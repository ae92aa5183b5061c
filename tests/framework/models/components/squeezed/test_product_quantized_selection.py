"""Product-quantized key scores (issue 21) against brute-force references."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from framework.kernels.squeezed_attention import kmeans
from framework.models.components.squeezed import serve
from framework.models.components.squeezed.baselines import OracleTopK
from framework.models.components.squeezed.product_quantized_selection import (
    ProductQuantizedTopK,
    estimated_logits,
    fit_product_quantizer,
)


def test_euclidean_kmeans_is_a_lloyd_fixed_point():
    # normalize=False: every point is nearest (Euclidean, raw vectors) to its own centroid, which is its cluster mean
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(1, 40, 3, generator=g) * 0.3 + 5.0, torch.randn(1, 40, 3, generator=g) * 0.3])
    x = torch.cat([x[:1], x[1:]], 1)  # one head, two well separated blobs of very different norms
    fit = kmeans(x, 2, iters=50, normalize=False)
    d = torch.cdist(x[0], fit.centroids[0])
    assert torch.equal(d.argmin(-1), fit.labels[0])
    for c in range(2):
        torch.testing.assert_close(fit.centroids[0, c], x[0][fit.labels[0] == c].mean(0))
    assert sorted(fit.cluster_sizes[0].tolist()) == [40, 40]  # the blobs, which the cosine assignment would mix
    with pytest.raises(ValueError, match="normalize must be a bool"):
        from framework.kernels.squeezed_attention.ops import kmeans as kmeans_op

        kmeans_op(x, 2, normalize=1)


def test_estimated_logits_are_the_dot_products_with_the_reconstructed_keys():
    g = torch.Generator().manual_seed(1)
    keys = torch.randn(2, 30, 8, generator=g)
    books, codes = fit_product_quantizer(keys, subspaces=4, codewords=5, iters=10)
    assert books.shape == (2, 4, 5, 2) and codes.shape == (2, 30, 4)
    # brute force: rebuild every key from its codewords and take q . k_hat
    recon = torch.stack([
        torch.stack([torch.cat([books[h, j, codes[h, n, j]] for j in range(4)]) for n in range(30)]) for h in range(2)
    ])
    q = torch.randn(3, 2, 5, 8, generator=g)
    want = torch.einsum("bhrd,hnd->bhrn", q, recon)
    torch.testing.assert_close(estimated_logits(q, books, codes), want, rtol=1e-5, atol=1e-5)


def test_one_codeword_per_key_is_exact_and_selects_like_the_oracle(index):
    # k = N: every sub-vector is its own codeword, so the estimate is exact and the selection is the oracle top-k
    layer = index.layers[1]
    n = layer.num_tokens
    pq = ProductQuantizedTopK(budget=0.9, subspaces=4, codewords=n, kmeans_iters=3)
    books, codes = pq.quantizer(layer)
    q = torch.randn(1, 4, 3, 16, generator=torch.Generator().manual_seed(2))
    grouped = q.reshape(1, 2, 6, 16)
    torch.testing.assert_close(
        estimated_logits(grouped, books, codes), torch.einsum("bhrd,hnd->bhrn", grouped, layer.keys[0].float()),
        rtol=1e-4, atol=1e-4,
    )
    oracle = OracleTopK(budget=0.3)
    # same key count: the oracle has no metadata, so give PQ the oracle's count through its budget
    pq.budget = 0.3 + pq.metadata_vectors(layer) / (2.0 * n)
    assert pq.num_keys(layer) == oracle.num_keys(layer)
    a, b = pq.select(q, layer, scale=0.25), oracle.select(q, layer, scale=0.25)
    torch.testing.assert_close(a.key_indices, b.key_indices)


@pytest.mark.parametrize("allocation", ["equal", "mass"])
def test_measured_budget_charges_codes_and_codebooks(model, index, allocation):
    pq = ProductQuantizedTopK(budget=0.5, subspaces=4, codewords=8, head_allocation=allocation)
    layer = index.layers[0]
    n, d = layer.num_tokens, layer.keys.shape[-1]
    meta = 8 + n * 4 * math.ceil(math.log2(8)) / (16.0 * d)
    assert pq.metadata_vectors(layer) == pytest.approx(meta)
    question = torch.randint(3, 300, (1, 5), generator=torch.Generator().manual_seed(3))
    with serve(model, index, pq) as session:
        model(input_ids=question, cache=index.new_cache(), use_cache=True)
    keys = round((0.5 - meta / (2 * n)) * n)
    assert session.budget().budget == pytest.approx(keys / n + meta / (2 * n), rel=1e-6)
    assert session.budget().budget == pytest.approx(0.5, abs=1.0 / n)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(subspaces=0), "subspaces must be an int >= 1"),
        (dict(codewords=1), "codewords must be >= 2"),
        (dict(kmeans_iters=True), "kmeans_iters must be an int >= 1"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProductQuantizedTopK(budget=0.3, **kwargs)


def test_head_dim_must_split_into_subspaces():
    with pytest.raises(ValueError, match="not divisible by subspaces=3"):
        fit_product_quantizer(torch.randn(1, 10, 8), subspaces=3, codewords=2)


def test_sinks_and_window_are_always_kept(index):
    layer = index.layers[0]
    n = layer.num_tokens
    pq = ProductQuantizedTopK(budget=0.3, subspaces=4, codewords=8, sinks=3, window=10)
    q = torch.randn(2, 4, 2, 16, generator=torch.Generator().manual_seed(5))
    sel = pq.select(q, layer, scale=0.25)
    books, codes = pq.quantizer(layer)
    probs = torch.softmax(estimated_logits(q.reshape(2, 2, 4, 16), books, codes) * 0.25, -1).mean(2)  # [B, Hkv, N]
    for b in range(2):
        for h in range(2):
            got = set(sel.key_indices[b, h, : int(sel.key_counts[b, h])].tolist())
            always = set(range(3)) | set(range(n - 10, n))
            assert always <= got and len(got) == pq.num_keys(layer)
            # the rest are the best-estimated keys outside the always-kept ones (brute force)
            middle = probs[b, h, 3 : n - 10]
            want = {3 + i for i in torch.topk(middle, pq.num_keys(layer) - 13).indices.tolist()}
            assert got - always == want
    with pytest.raises(ValueError, match="fewer than sinks=3 \\+ window=100"):
        ProductQuantizedTopK(budget=0.1, subspaces=4, codewords=8, sinks=3, window=100).select(q, layer, scale=0.25)


def test_default_quantizer_is_the_validated_one():
    """The default groups are the issue-21 choice: the `pq_m16_sinks_window` evaluation row without its sinks/window."""
    from framework.models.components.squeezed.qa_evaluation import BASELINES

    default, chosen = ProductQuantizedTopK(budget=0.3), BASELINES["pq_m16_sinks_window"](0.3)
    assert (default.subspaces, default.codewords) == (chosen.subspaces, chosen.codewords) == (16, 16)


def _estimated_probs(pq, q, layer, scale=0.25):
    books, codes = pq.quantizer(layer)
    b, hq, t, d = q.shape
    hkv = books.shape[0]
    return torch.softmax(estimated_logits(q.reshape(b, hkv, hq // hkv * t, d), books, codes) * scale, -1).mean(2)


def test_mass_allocation_keeps_the_largest_estimates_of_all_heads_together(index):
    layer = index.layers[0]
    n = layer.num_tokens
    pq = ProductQuantizedTopK(budget=0.3, subspaces=4, codewords=8, sinks=2, window=5, head_allocation="mass")
    q = torch.randn(3, 4, 2, 16, generator=torch.Generator().manual_seed(7)) * 3.0  # peaked heads
    sel = pq.select(q, layer, scale=0.25)
    probs = _estimated_probs(pq, q, layer)  # [B, Hkv, N]
    k, hkv = pq.num_keys(layer), probs.shape[1]
    always = set(range(2)) | set(range(n - 5, n))
    for b in range(3):
        chosen = {(h, i) for h in range(hkv) for i in sel.key_indices[b, h, : int(sel.key_counts[b, h])].tolist()}
        assert int(sel.key_counts[b].sum()) == hkv * k == len(chosen)  # same total as K per head
        assert all((h, i) in chosen for h in range(hkv) for i in always)
        # brute force: the remaining slots are the largest estimates among every head's other keys
        pool = sorted(((float(probs[b, h, i]), h, i) for h in range(hkv) for i in range(n) if i not in always),
                      reverse=True)
        want = {(h, i) for _, h, i in pool[: hkv * k - hkv * len(always)]}
        assert chosen - {(h, i) for h in range(hkv) for i in always} == want
        for h in range(hkv):  # rows ascending, as the kernels expect
            row = sel.key_indices[b, h, : int(sel.key_counts[b, h])]
            assert torch.all(row[1:] > row[:-1])
    # it keeps at least the estimated mass of the per-head top-K (it maximizes that sum at the same total count)
    equal = ProductQuantizedTopK(budget=0.3, subspaces=4, codewords=8, sinks=2, window=5)
    equal._fits = pq._fits  # the same fitted quantizer, so only the allocation differs

    def kept_mass(s):
        return sum(float(probs[b, h, s.key_indices[b, h, : int(s.key_counts[b, h])].long()].sum())
                   for b in range(3) for h in range(hkv))
    assert kept_mass(sel) >= kept_mass(equal.select(q, layer, scale=0.25)) - 1e-6
    assert (sel.key_counts != k).any()  # the peaked heads did give keys away


def test_mass_allocation_at_full_budget_and_with_one_head_is_the_per_head_top_k(model, index):
    layer = index.layers[0]
    q = torch.randn(2, 4, 3, 16, generator=torch.Generator().manual_seed(8))
    full = ProductQuantizedTopK(budget=1.0, subspaces=4, codewords=8, head_allocation="mass")
    full.budget = 1.0 + full.metadata_vectors(layer) / (2.0 * layer.num_tokens)  # every key
    sel = full.select(q, layer, scale=0.25)
    assert torch.equal(sel.key_counts, torch.full_like(sel.key_counts, layer.num_tokens))
    one = dataclasses.replace(layer, keys=layer.keys[:, :1], values=layer.values[:, :1])  # one KV head
    mass = ProductQuantizedTopK(budget=0.3, subspaces=4, codewords=8, head_allocation="mass")
    a = mass.select(q[:, :2], one, scale=0.25)
    b = ProductQuantizedTopK(budget=0.3, subspaces=4, codewords=8).select(q[:, :2], one, scale=0.25)
    assert torch.equal(a.key_indices, b.key_indices) and torch.equal(a.key_counts, b.key_counts)
    with pytest.raises(ValueError, match="head_allocation must be 'equal' or 'mass', got 'greedy'"):
        ProductQuantizedTopK(budget=0.3, head_allocation="greedy")


def _kept(sel, b, h):
    return set(sel.key_indices[b, h, : int(sel.key_counts[b, h])].tolist())


def _exact_probs(q, layer, scale=0.25):
    b, hq, t, d = q.shape
    keys = layer.keys[0].float()  # [Hkv, N, D]
    hkv = keys.shape[0]
    grouped = q.float().reshape(b, hkv, hq // hkv * t, d)
    return torch.softmax(torch.einsum("bhrd,hnd->bhrn", grouped, keys) * scale, -1).mean(2)  # over all N keys


def test_refinement_keeps_the_exactly_best_of_the_estimated_shortlist(index):
    """Brute force: shortlist = the r·K best estimates (sinks and window first); kept = the forced keys, then the
    candidates of largest exact probability among the candidates (softmax over the shortlist only)."""
    layer = index.layers[0]
    n = layer.num_tokens
    pq = ProductQuantizedTopK(budget=0.4, subspaces=4, codewords=8, sinks=2, window=4, refine_ratio=2.5)
    q = torch.randn(2, 4, 3, 16, generator=torch.Generator().manual_seed(11)) * 2.0
    sel = pq.select(q, layer, scale=0.25)
    keep, m = pq.refine_counts(layer)
    assert m == round(2.5 * keep) and keep == pq.num_keys(layer)
    est = _estimated_probs(pq, q, layer)
    always = set(range(2)) | set(range(n - 4, n))
    for b in range(2):
        for h in range(2):
            ranked = sorted(range(n), key=lambda i: (i not in always, -float(est[b, h, i])))
            shortlist = ranked[:m]
            keys = layer.keys[0, h].float()[shortlist]
            grouped = q[b].reshape(2, 6, 16)[h].float()
            exact = torch.softmax(grouped @ keys.T * 0.25, -1).mean(0)
            order = sorted(range(m), key=lambda j: (shortlist[j] not in always, -float(exact[j])))
            assert _kept(sel, b, h) == {shortlist[j] for j in order[:keep]}
            assert always <= _kept(sel, b, h) <= set(shortlist)


def test_refinement_with_every_key_a_candidate_is_the_oracle_top_k(index):
    layer = index.layers[1]
    n = layer.num_tokens
    q = torch.randn(1, 4, 2, 16, generator=torch.Generator().manual_seed(12))
    pq = ProductQuantizedTopK(budget=0.3, subspaces=4, codewords=8, refine_ratio=float(n))  # M = N
    keep, m = pq.refine_counts(layer)
    assert m == n
    oracle = OracleTopK(budget=keep / n)
    assert oracle.num_keys(layer) == keep
    want = oracle.select(q, layer, scale=0.25)
    got = pq.select(q, layer, scale=0.25)
    for h in range(2):
        assert _kept(got, 0, h) == _kept(want, 0, h)


def test_refinement_with_ratio_one_is_the_plain_estimate_at_its_key_count(index):
    layer = index.layers[0]
    q = torch.randn(2, 4, 2, 16, generator=torch.Generator().manual_seed(13))
    refined = ProductQuantizedTopK(budget=0.35, subspaces=4, codewords=8, sinks=1, refine_ratio=1.0)
    keep, m = refined.refine_counts(layer)
    assert m == keep
    plain = ProductQuantizedTopK(budget=0.35, subspaces=4, codewords=8, sinks=1)
    plain.share_fits_with(refined)
    plain.budget = refined.budget - (refined.metadata_vectors(layer) - plain.metadata_vectors(layer)) / (
        2.0 * layer.num_tokens)  # the refined row's K, without the candidates' charge
    assert plain.num_keys(layer) == keep
    a, b = refined.select(q, layer, scale=0.25), plain.select(q, layer, scale=0.25)
    for bb in range(2):
        for h in range(2):
            assert _kept(a, bb, h) == _kept(b, bb, h)


def test_refinement_charges_its_candidates_and_meets_the_budget(model, index):
    pq = ProductQuantizedTopK(budget=0.5, subspaces=4, codewords=8, refine_ratio=2.0)
    layer = index.layers[0]
    n = layer.num_tokens
    keep, m = pq.refine_counts(layer)
    assert pq.metadata_vectors(layer) == pytest.approx(pq.quantizer_vectors(layer) + m)
    # K + (quantizer + 2K) / 2 = budget * N, up to rounding of K
    assert keep + (pq.quantizer_vectors(layer) + m) / 2 == pytest.approx(0.5 * n, abs=2.0)
    question = torch.randint(3, 300, (1, 5), generator=torch.Generator().manual_seed(3))
    with serve(model, index, pq) as session:
        model(input_ids=question, cache=index.new_cache(), use_cache=True)
    assert session.budget().budget == pytest.approx(0.5, abs=2.0 / n)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(refine_ratio=0.5), "refine_ratio must be 0 \\(off\\) or a finite number >= 1, got 0.5"),
        (dict(refine_ratio=True), "refine_ratio must be 0"),
        (dict(refine_ratio=float("inf")), "refine_ratio must be 0"),
        (dict(refine_ratio=2.0, head_allocation="mass"), "refine_ratio=2.0 needs head_allocation='equal'"),
    ],
)
def test_bad_refinement_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProductQuantizedTopK(budget=0.3, **kwargs)
