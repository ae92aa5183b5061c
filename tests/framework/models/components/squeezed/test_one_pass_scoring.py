"""One-pass teacher-forced scoring == greedy generation; per-segment selection scopes against brute force."""

from __future__ import annotations

import pytest
import torch

from framework.kernels.squeezed_attention.reference import selection_mask
from framework.models.components.squeezed import SqueezedAttention
from framework.models.components.squeezed.answer_scoring import score_answer_rows
from framework.models.components.squeezed.baselines import OracleTopK, QuestPages, RowwiseSelector
from framework.models.components.squeezed.query_segments import query_segments, select_segments
from framework.models.components.squeezed.transformers_backend import serve

QUESTION = [5, 17, 42, 99, 7, 250, 31, 64]


def _selector(kind: str, build: SqueezedAttention):
    if kind == "squeezed_topk":
        return SqueezedAttention(observation_window=build.observation_window, attention_sinks=build.attention_sinks,
                                 centroid_fraction=build.centroid_fraction, budget=0.3, budget_mode="topk")
    if kind == "squeezed_paper":
        return SqueezedAttention(observation_window=build.observation_window, attention_sinks=build.attention_sinks,
                                 centroid_fraction=build.centroid_fraction, budget=0.3)
    if kind == "quest":
        return QuestPages(budget=0.3, page_size=8)
    return OracleTopK(budget=0.2)


def test_query_segments_closed_forms():
    assert query_segments(5, scope="input") == [(0, 5)]
    assert query_segments(5, scope="input", decode_positions=2) == [(0, 3), (3, 4), (4, 5)]
    assert query_segments(5, scope="last", decode_positions=2) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert query_segments(3, scope="token") == [(0, 1), (1, 2), (2, 3)]
    assert query_segments(1, scope="last") == [(0, 1)]
    assert query_segments(2, scope="input", decode_positions=2) == [(0, 1), (1, 2)]
    with pytest.raises(ValueError, match="selection_scope"):
        query_segments(3, scope="every")
    with pytest.raises(ValueError, match="decode_positions"):
        query_segments(3, scope="input", decode_positions=4)


def test_one_pass_dense_equals_greedy_generation(model, context, index):
    """Dense: the generated tokens score as correct in one pass, a changed token does not, logits match the loop."""
    prompt = torch.cat([context, torch.tensor([QUESTION])], dim=1)
    with torch.no_grad():
        out = model.generate(input_ids=prompt, cache=index.new_cache(), max_new_tokens=5, do_sample=False)
    answer = out[0, prompt.shape[1] :].tolist()
    one = score_answer_rows(model, index, QUESTION, answer)[0]
    loop = score_answer_rows(model, index, QUESTION, answer, one_pass=False)[0]
    assert one.correct and one.token_accuracy == 1.0
    torch.testing.assert_close(one.logits, loop.logits, atol=1e-4, rtol=1e-4)
    wrong = list(answer)
    wrong[2] = (wrong[2] + 1) % 300
    bad = score_answer_rows(model, index, QUESTION, wrong)[0]
    assert not bad.correct


@pytest.mark.parametrize("scope", ["input", "last", "token"])
@pytest.mark.parametrize("kind", ["squeezed_topk", "squeezed_paper", "quest", "oracle"])
def test_one_pass_sparse_equals_token_by_token(model, index, build_settings, scope, kind):
    """Sparse: one pass makes the same selections as prefill + decode steps (same logits, same lookups)."""
    answer = [11, 12, 13, 14]
    got = {}
    for one_pass in (True, False):
        with serve(model, index, _selector(kind, build_settings), selection_scope=scope) as session:
            got[one_pass] = (score_answer_rows(model, index, QUESTION, answer, session=session, one_pass=one_pass)[0],
                             session.budget())
    torch.testing.assert_close(got[True][0].logits, got[False][0].logits, atol=1e-4, rtol=1e-4)
    assert got[True][1].lookups == got[False][1].lookups
    assert got[True][1].budget == pytest.approx(got[False][1].budget, rel=1e-9)
    segments = {"input": 1, "last": 2, "token": len(QUESTION)}[scope] + len(answer) - 1
    assert got[True][1].lookups == segments * len(index.layers) * index.layers[0].keys.shape[1]


def test_one_pass_sparse_equals_generation(model, context, index, build_settings):
    """Inside serve (paper scope), tokens from model.generate score as correct in one pass."""
    prompt = torch.cat([context, torch.tensor([QUESTION])], dim=1)
    for scope in ("input", "token"):
        with serve(model, index, _selector("squeezed_topk", build_settings), selection_scope=scope) as session:
            with torch.no_grad():
                out = model.generate(input_ids=prompt, cache=index.new_cache(), max_new_tokens=5, do_sample=False)
            answer = out[0, prompt.shape[1] :].tolist()
            assert score_answer_rows(model, index, QUESTION, answer, session=session)[0].correct


def test_token_scope_selections_are_per_token_brute_force(model, index, build_settings):
    """select_segments with one-token segments == the selector applied to each query token alone."""
    torch.manual_seed(3)
    layer = index.layers[1]
    q = torch.randn(2, 4, 6, 16)
    for kind in ("squeezed_topk", "quest", "oracle"):
        sel = _selector(kind, build_settings)
        if hasattr(sel, "bind"):
            sel.bind(index)
        chosen = select_segments(sel, q, layer, scale=0.25, segments=query_segments(6, scope="token"))
        for t in range(6):
            expect = selection_mask(sel.select(q[:, :, t : t + 1], layer, scale=0.25), layer.num_tokens)
            assert torch.equal(chosen.keep[:, :, t], expect), (kind, t)
        shared = select_segments(sel, q, layer, scale=0.25, segments=query_segments(6, scope="input"))
        expect = selection_mask(sel.select(q, layer, scale=0.25), layer.num_tokens)
        assert torch.equal(shared.keep, expect.unsqueeze(2).expand_as(shared.keep))


def test_rowwise_segments_use_each_rows_selector(model, index, build_settings):
    torch.manual_seed(4)
    layer = index.layers[0]
    q = torch.randn(2, 4, 3, 16)
    rows = RowwiseSelector([OracleTopK(budget=0.2), QuestPages(budget=0.3, page_size=8)], [index, index]).bind(index)
    chosen = select_segments(rows, q, layer, scale=0.25, segments=query_segments(3, scope="token"))
    for r, sel in enumerate(rows.selectors):
        alone = select_segments(sel, q[r : r + 1], layer, scale=0.25, segments=query_segments(3, scope="token"))
        assert torch.equal(chosen.keep[r : r + 1], alone.keep)


@pytest.mark.parametrize("scope", ["last", "token"])
def test_full_budget_token_scope_equals_dense(model, index, scope):
    """Every key kept: per-token selection changes nothing (same logits as dense attention)."""
    answer = [11, 12, 13]
    dense = score_answer_rows(model, index, QUESTION, answer)[0]
    with serve(model, index, OracleTopK(budget=1.0), selection_scope=scope, diagnostics=True) as session:
        sparse = score_answer_rows(model, index, QUESTION, answer, session=session)[0]
    torch.testing.assert_close(sparse.logits, dense.logits, atol=1e-4, rtol=1e-4)
    assert session.attention_diagnostics().mass_recall == pytest.approx(1.0, abs=1e-6)


def test_one_pass_finds_the_enclosing_session(model, index, build_settings):
    """Called inside serve(...) without session=, the answer positions still select like decode steps."""
    answer = [11, 12, 13, 14]
    with serve(model, index, _selector("squeezed_paper", build_settings)) as session:
        implicit = score_answer_rows(model, index, QUESTION, answer)[0]
        loop = score_answer_rows(model, index, QUESTION, answer, one_pass=False)[0]
    torch.testing.assert_close(implicit.logits, loop.logits, atol=1e-4, rtol=1e-4)
