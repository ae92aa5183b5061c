"""Exact refinement of the centroid selection (issue 21) against brute-force references."""

from __future__ import annotations

import pytest
import torch

from framework.kernels.squeezed_attention.reference import select_from_scores_reference
from framework.kernels.squeezed_attention.validation import budget_to_count
from framework.models.components.squeezed import SqueezedAttention, serve
from framework.models.components.squeezed.exact_refinement import candidate_keys, refine_candidates
from framework.models.components.squeezed.qa_evaluation import keep_fraction_for_budget


def _serving(build, *, budget, ratio, **kw):
    return SqueezedAttention(
        centroid_fraction=build.centroid_fraction, observation_window=build.observation_window,
        attention_sinks=build.attention_sinks, budget=budget, budget_mode="topk", refine_ratio=ratio, **kw,
    )


def _query(seed: int, t: int = 3) -> torch.Tensor:
    return torch.randn(1, 4, t, 16, generator=torch.Generator().manual_seed(seed))


def _clustered_rows(sel, layer) -> list[list[set[int]]]:
    """Per (batch, KV head): the selected clustered keys, as indices into the Nc clustered keys."""
    s, nc = layer.attention_sinks, layer.num_clustered
    out = []
    for b in range(sel.key_indices.shape[0]):
        rows = []
        for h in range(sel.key_indices.shape[1]):
            idx = sel.key_indices[b, h, : int(sel.key_counts[b, h])].tolist()
            rows.append({i - s for i in idx if s <= i < s + nc})
        out.append(rows)
    return out


@pytest.mark.parametrize("seed", range(3))
def test_every_key_a_candidate_is_the_exact_top_k_of_the_clustered_keys(index, build_settings, seed):
    layer = index.layers[1]
    nc = layer.num_clustered
    sel = _serving(build_settings, budget=0.25, ratio=1e6).select(_query(seed), layer, scale=0.25)
    k = budget_to_count(0.25, nc)
    # brute force: softmax over the clustered keys per (query, head), mean over the group's queries and heads
    keys = layer.keys[0, :, layer.attention_sinks : layer.attention_sinks + nc].float()  # [Hkv, Nc, D]
    q = _query(seed).reshape(1, 2, 2 * 3, 16)
    probs = torch.softmax(torch.einsum("bhtd,hnd->bhtn", q, keys) * 0.25, -1).mean(2)[0]
    for h, got in enumerate(_clustered_rows(sel, layer)[0]):
        assert got == set(torch.topk(probs[h], k).indices.tolist())


@pytest.mark.parametrize("seed", range(3))
def test_ratio_one_keeps_the_paper_top_k_keys(index, build_settings, seed):
    layer = index.layers[0]
    refined = _serving(build_settings, budget=0.3, ratio=1.0).select(_query(seed), layer, scale=0.25)
    plain = _serving(build_settings, budget=0.3, ratio=0.0).select(_query(seed), layer, scale=0.25)
    assert _clustered_rows(refined, layer) == _clustered_rows(plain, layer)
    # same framing: sinks and the observation window are attended by both
    torch.testing.assert_close(refined.key_counts, plain.key_counts)


@pytest.mark.parametrize("seed", range(4))
def test_kept_keys_are_the_best_candidates_and_candidates_follow_cluster_rank(seed):
    g = torch.Generator().manual_seed(seed)
    hkv, nc, c, d = 2, 50, 7, 8
    labels = torch.cat([torch.arange(c), torch.randint(0, c, (nc - c,), generator=g)]).expand(hkv, nc).clone()
    scores = torch.rand(1, hkv, c, generator=g)
    keys = torch.randn(1, hkv, nc, d, generator=g)
    q = torch.randn(1, 4, 2, d, generator=g)
    cand = candidate_keys(scores, labels, 20)
    # brute force: walk the clusters best first and take their keys in index order until 20 are taken
    for h in range(hkv):
        want = []
        for j in torch.argsort(scores[0, h], descending=True).tolist():
            want += [i for i in range(nc) if labels[h, i] == j]
        assert cand[0, h].tolist() == want[:20]
    # the plain top-k selection takes exactly these keys at the same count
    plain = select_from_scores_reference(scores, labels, budget=20 / nc)
    for h in range(hkv):
        assert set(plain.key_indices[0, h, : int(plain.key_counts[0, h])].tolist()) == set(cand[0, h].tolist())
    kept = refine_candidates(q, keys, cand, keep=6, scale=0.4)
    for h in range(hkv):
        qs = q[0, 2 * h : 2 * h + 2].reshape(-1, d)
        logits = qs @ keys[0, h, cand[0, h]].T * 0.4
        p = torch.softmax(logits, -1).mean(0)
        p_by_key = dict(zip(cand[0, h].tolist(), p.tolist()))
        kept_p = [p_by_key[i] for i in kept[0, h].tolist()]
        dropped = [v for i, v in p_by_key.items() if i not in set(kept[0, h].tolist())]
        assert set(kept[0, h].tolist()) <= set(cand[0, h].tolist())
        assert min(kept_p) >= max(dropped) - 1e-7


def test_measured_budget_charges_the_candidates(model, index, build_settings):
    # budget = K/N + (S + W)/N + (centroids + candidates)/(2N), solved by keep_fraction_for_budget
    target = 0.6
    keep = keep_fraction_for_budget(target, index, 1, refine_ratio=2.0)
    sq = _serving(build_settings, budget=keep, ratio=2.0)
    question = torch.randint(3, 300, (1, 5), generator=torch.Generator().manual_seed(9))
    with serve(model, index, sq) as session:
        model(input_ids=question, cache=index.new_cache(), use_cache=True)
    layer = index.layers[0]
    n, nc = layer.num_tokens, layer.num_clustered
    k, m = sq.refine_counts(nc)
    want = (k + layer.attention_sinks + layer.observation_window) / n + (layer.centroids.shape[1] + m) / (2 * n)
    assert session.budget().budget == pytest.approx(want, rel=1e-6)
    assert session.budget().budget == pytest.approx(target, abs=2.0 / n)


def test_full_candidates_at_full_budget_equal_dense(model, context, index, build_settings):
    question = torch.randint(3, 300, (1, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        dense = model(torch.cat([context, question], 1)).logits[:, -6:]
        with serve(model, index, _serving(build_settings, budget=1.0, ratio=1.0)) as session:
            got = model(input_ids=question, cache=index.new_cache(), use_cache=True).logits
    torch.testing.assert_close(got, dense, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(refine_ratio=0.5, budget=0.3, budget_mode="topk"), "refine_ratio must be 0"),
        (dict(refine_ratio=float("inf"), budget=0.3, budget_mode="topk"), "refine_ratio must be 0"),
        (dict(refine_ratio=True, budget=0.3, budget_mode="topk"), "refine_ratio must be 0"),
        (dict(refine_ratio=2.0, budget=0.3), "budget_mode='topk'"),
        (dict(refine_ratio=2.0, threshold=0.01), "budget_mode='topk'"),
        (dict(refine_ratio=2.0, budget=0.3, budget_mode="topk", levels=2, coarse_fraction=0.01), "levels=1"),
    ],
)
def test_bad_refine_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SqueezedAttention(**kwargs)


def test_selection_from_refinement_is_ascending_and_framed(index, build_settings):
    layer = index.layers[0]
    sel = _serving(build_settings, budget=0.2, ratio=3.0).select(_query(7), layer, scale=0.25)
    for h in range(2):
        idx = sel.key_indices[0, h, : int(sel.key_counts[0, h])].tolist()
        assert idx == sorted(idx) and len(set(idx)) == len(idx)
        assert idx[: layer.attention_sinks] == list(range(layer.attention_sinks))
        assert idx[-layer.observation_window :] == list(range(layer.num_tokens - layer.observation_window,
                                                              layer.num_tokens))
