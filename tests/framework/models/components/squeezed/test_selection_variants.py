"""Issue 21's selection variants (radius-bounded cluster scores, max aggregation) against brute-force references."""

from __future__ import annotations

import itertools

import pytest
import torch

from framework.kernels.squeezed_attention.bounded_scores import bounded_cluster_scores_reference, cluster_radii
from framework.kernels.squeezed_attention.reference import cluster_scores_reference
from framework.kernels.squeezed_attention.validation import budget_to_count
from framework.models.components.squeezed import FixedContextIndex, SqueezedAttention, serve
from tests.framework.models.components.squeezed.conftest import tiny_llama


def _clustered(seed: int, h: int = 2, n: int = 40, c: int = 6, d: int = 8):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(h, n, d, generator=g)
    labels = torch.cat([torch.arange(c), torch.randint(0, c, (n - c,), generator=g)]).expand(h, n).clone()
    sizes = torch.stack([torch.bincount(labels[i], minlength=c) for i in range(h)])
    cent = torch.stack([torch.stack([keys[i][labels[i] == j].mean(0) for j in range(c)]) for i in range(h)])
    return keys, labels, sizes, cent


def test_radii_are_the_farthest_member_by_brute_force():
    keys, labels, _, cent = _clustered(0)
    r = cluster_radii(keys, labels, cent)
    for i, j in itertools.product(range(2), range(6)):
        members = keys[i][labels[i] == j]
        assert r[i, j] == pytest.approx(float((members - cent[i, j]).norm(dim=-1).max()), rel=1e-5)


def test_weight_zero_and_mean_is_the_paper_score():
    keys, labels, sizes, cent = _clustered(1)
    q = torch.randn(2, 4, 3, 8, generator=torch.Generator().manual_seed(2))
    r = cluster_radii(keys, labels, cent)
    got = bounded_cluster_scores_reference(q, cent, sizes, 0.3, radii=r, radius_weight=0.0, aggregation="mean")
    torch.testing.assert_close(got, cluster_scores_reference(q, cent, sizes, 0.3), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("aggregation", ["mean", "max"])
def test_one_key_per_cluster_is_the_exact_softmax(aggregation):
    # C = N singletons: radius 0, so any weight gives the exact attention probabilities of every key
    g = torch.Generator().manual_seed(3)
    keys = torch.randn(2, 12, 8, generator=g)
    labels = torch.arange(12).expand(2, 12).clone()
    sizes = torch.ones(2, 12, dtype=torch.int64)
    q = torch.randn(1, 4, 5, 8, generator=g)  # G = 2 query heads per KV head, T = 5
    r = cluster_radii(keys, labels, keys)
    assert torch.all(r == 0)
    got = bounded_cluster_scores_reference(q, keys, sizes, 0.5, radii=r, radius_weight=1.0, aggregation=aggregation)
    exact = torch.softmax(torch.einsum("bhtd,hnd->bhtn", q, keys.repeat_interleave(2, 0)) * 0.5, -1)  # [1, 4, 5, 12]
    exact = exact.reshape(1, 2, 2 * 5, 12)
    want = exact.mean(2) if aggregation == "mean" else exact.amax(2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed", range(5))
def test_bound_never_ranks_a_cluster_below_one_whose_best_key_scores_lower(seed):
    # One query: rank(bound) puts cluster a above every cluster b with bound_b < best_a (so the cluster holding the
    # best key overall is ranked first or tied with clusters that *could* hold a better key).
    keys, labels, sizes, cent = _clustered(10 + seed, h=1, n=60, c=8, d=16)
    q = torch.randn(1, 1, 1, 16, generator=torch.Generator().manual_seed(seed))
    r = cluster_radii(keys, labels, cent)
    scores = bounded_cluster_scores_reference(q, cent, sizes, 0.25, radii=r, radius_weight=1.0)[0, 0]
    logits = (keys[0] @ q[0, 0, 0]) * 0.25
    best = torch.stack([logits[labels[0] == j].max() for j in range(8)])
    bound = (cent[0] @ q[0, 0, 0] + q.norm() * r[0]) * 0.25
    assert torch.all(bound >= best - 1e-5)  # a true upper bound of every cluster's best key
    for a, b in itertools.permutations(range(8), 2):
        if bound[b] < best[a]:
            assert scores[a] > scores[b], (a, b)
    assert int(scores.argmax()) in {j for j in range(8) if bound[j] >= best.max() - 1e-6}


def test_max_aggregation_is_at_least_the_mean():
    keys, labels, sizes, cent = _clustered(4)
    q = torch.randn(3, 4, 6, 8, generator=torch.Generator().manual_seed(5))
    mean = bounded_cluster_scores_reference(q, cent, sizes, 0.3)
    mx = bounded_cluster_scores_reference(q, cent, sizes, 0.3, aggregation="max")
    assert torch.all(mx >= mean - 1e-7)


@pytest.mark.parametrize("variant", [dict(radius_weight=1.0), dict(query_aggregation="max"),
                                     dict(radius_weight=0.5, query_aggregation="max")])
def test_full_budget_variants_equal_dense(model, context, index, variant):
    ref = tiny_llama("sdpa")
    question = torch.randint(3, 300, (1, 7), generator=torch.Generator().manual_seed(8))
    settings = SqueezedAttention(observation_window=16, attention_sinks=2, centroid_fraction=0.1, budget=1.0,
                                 budget_mode="topk", **variant)
    with torch.no_grad():
        expected = ref(input_ids=torch.cat([context, question], 1)).logits[:, -7:]
        with serve(model, index, settings) as session:
            got = model(input_ids=question, cache=index.new_cache(), use_cache=True).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert session.budget().kept_fraction == pytest.approx(1.0)


def test_topk_variant_keeps_exactly_the_budget(model, index):
    settings = SqueezedAttention(observation_window=16, attention_sinks=2, centroid_fraction=0.1, budget=0.25,
                                 budget_mode="topk", radius_weight=1.0, query_aggregation="max")
    question = torch.randint(3, 300, (1, 4), generator=torch.Generator().manual_seed(9))
    with torch.no_grad(), serve(model, index, settings) as session:
        model(input_ids=question, cache=index.new_cache(), use_cache=True)
    layer = index.layers[0]
    kept = budget_to_count(0.25, layer.num_clustered) + 16 + 2  # top-k clustered keys + window + sinks
    assert session.budget().kept_fraction == pytest.approx(kept / layer.num_tokens, abs=1 / layer.num_tokens)
    c, d = layer.centroids.shape[1:]
    assert session.budget().metadata_fraction == pytest.approx((c + c / d) / (2 * layer.num_tokens))


def test_variants_need_topk_or_a_threshold():
    with pytest.raises(ValueError, match="budget_mode='topk'"):
        SqueezedAttention(radius_weight=1.0)
    with pytest.raises(ValueError, match="budget_mode='topk'"):
        SqueezedAttention(query_aggregation="max")
    with pytest.raises(ValueError, match="radius_weight"):
        SqueezedAttention(radius_weight=2.0, budget_mode="topk")
    with pytest.raises(ValueError, match="query_aggregation"):
        SqueezedAttention(query_aggregation="median", budget_mode="topk")
    SqueezedAttention(radius_weight=1.0, threshold=0.01)  # a raw threshold is fine


def test_shared_prefill_builds_the_same_index(model, context, build_settings, index):
    pre = FixedContextIndex.prefill(model, context, observation_window=16)
    again = FixedContextIndex.build(model, context, attention=build_settings, prefill=pre)
    for a, b in zip(again.layers, index.layers):
        assert torch.equal(a.key_labels, b.key_labels) and torch.equal(a.centroids, b.centroids)
    with pytest.raises(ValueError, match="prefill"):
        FixedContextIndex.build(model, context[:, :-1], attention=build_settings, prefill=pre)
