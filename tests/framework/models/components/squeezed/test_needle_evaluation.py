"""Needle contexts, the batched many-method evaluation and the paired bootstrap."""

from __future__ import annotations

import pytest
import torch

from framework.datamodules.long_context_qa import ByteTokenizer
from framework.datamodules.needle_retrieval import build_needle_context
from framework.datamodules.offline_texts import TEXT_SOURCES, source_paragraphs
from framework.models.components.squeezed import FixedContextIndex, SqueezedAttention
from framework.models.components.squeezed.needle_evaluation import (
    SqueezedVariant,
    depth_bin,
    evaluate_methods,
    paired_bootstrap,
)


@pytest.mark.parametrize("source", TEXT_SOURCES)
def test_needle_context_layout(source):
    tok = ByteTokenizer()
    ctx = build_needle_context(tok, context_tokens=6000, seed=3, paragraphs=source_paragraphs(source), source=source)
    text = tok.decode(list(ctx.context_ids))
    assert abs(len(ctx.context_ids) - 6000) < 400
    assert [q.task for q in ctx.questions].count("single") == 6
    assert [q.task for q in ctx.questions].count("multi") == 7
    assert [q.task for q in ctx.questions].count("qa") == 4
    for q in ctx.questions:
        assert tok.decode(list(q.answer_ids)) == q.answer_text
        assert f" is {q.answer_text}." in text  # the needle is in the context
        assert q.distractors == {"single": 0, "qa": 3}.get(q.task, q.distractors)
        assert q.task != "multi" or q.distractors in (2, 3)
    # uniformly spread depths: one needle per 1/17 of the prose, up to sentence granularity
    depths = sorted(q.depth for q in ctx.questions)
    for i, d in enumerate(depths):
        assert abs(d - (i + 0.5) / 17) < 0.06
    # a "single" needle's kind occurs once; a "multi" needle's kind occurs 3-4 times
    for q in ctx.questions:
        prefix = tok.decode(list(q.question_ids)).split("\n")[-1]  # the answer prefix after the chat markup
        kind = prefix.split(" of the ")[0].removeprefix("The ")
        if q.task == "single":
            assert text.count(f"The {kind} of the ") == 1
        if q.task == "multi":
            assert text.count(f"The {kind} of the ") == q.distractors + 1


def test_needle_context_is_seeded():
    tok = ByteTokenizer()
    para = source_paragraphs("python_docs")
    a = build_needle_context(tok, context_tokens=3000, seed=1, paragraphs=para)
    b = build_needle_context(tok, context_tokens=3000, seed=1, paragraphs=para)
    c = build_needle_context(tok, context_tokens=3000, seed=2, paragraphs=para)
    assert a == b and a.context_ids != c.context_ids


@pytest.mark.parametrize("style, link", [("sentence", " is "), ("colon", ":")])
def test_needle_styles_and_answer_prefix(style, link):
    tok = ByteTokenizer()
    para = source_paragraphs("python_docs")
    ctx = build_needle_context(tok, context_tokens=3000, seed=4, paragraphs=para, single=2, multi_groups=(3,),
                               qa_facts=1, needle_style=style)
    bare = build_needle_context(tok, context_tokens=3000, seed=4, paragraphs=para, single=2, multi_groups=(3,),
                                qa_facts=1, needle_style=style, answer_prefix=False)
    text = tok.decode(list(ctx.context_ids))
    assert bare.context_ids == ctx.context_ids  # the prefix only changes the assistant turn
    for q, b in zip(ctx.questions, bare.questions):
        assert f"{link}{q.answer_text}." in text
        question = tok.decode(list(q.question_ids))
        # the answer sentence, up to the code, is the assistant's prefix; without it the turn starts with the code
        assert question.endswith(link.rstrip() + (" " if style == "sentence" else ""))
        assert tok.decode(list(b.question_ids)).endswith("<|im_start|>assistant\n")
        assert b.answer_ids == q.answer_ids


def test_unknown_needle_style_is_an_error():
    with pytest.raises(ValueError, match="needle_style must be one of"):
        build_needle_context(ByteTokenizer(), context_tokens=3000, seed=0, paragraphs=source_paragraphs("licenses"),
                             needle_style="table")


def test_needle_context_too_short_is_an_error():
    with pytest.raises(ValueError, match="too short"):
        build_needle_context(ByteTokenizer(), context_tokens=500, seed=0, paragraphs=source_paragraphs("licenses"))


def test_evaluate_methods_full_budget_rows_equal_dense(model, context):
    pre = FixedContextIndex.prefill(model, context, observation_window=16)
    build = SqueezedAttention(observation_window=16, centroid_fraction=0.1, kmeans_iters=5)
    indexes = {
        "sinks": FixedContextIndex.build(model, context, attention=SqueezedAttention(
            observation_window=16, centroid_fraction=0.1, kmeans_iters=5, attention_sinks=2), prefill=pre),
        "paper": FixedContextIndex.build(model, context, attention=build, prefill=pre),
    }
    variants = {"a": SqueezedVariant("paper", "topk"), "b": SqueezedVariant("sinks", "topk", 1.0, "max"),
                "c": SqueezedVariant("sinks")}
    q, a = torch.randint(3, 300, (6,)).tolist(), torch.randint(3, 300, (3,)).tolist()
    recs = evaluate_methods(model, indexes, q, a, budgets=(1.0, 0.3), variants=variants, build=build,
                            baselines=("oracle_topk", "quest", "random"), chunk_rows=4)
    assert recs[0].method == "dense" and len(recs) == 1 + 2 * 6
    for r in recs[1:]:
        # at target 1.0 the key selectors without metadata keep every key (Squeezed and Quest pay for metadata)
        if r.target_budget == 1.0 and r.method in ("oracle_topk", "random"):
            assert r.kl == pytest.approx(0.0, abs=1e-6) and r.mass_recall == pytest.approx(1.0, abs=1e-6)
            assert r.answer_logprob == pytest.approx(recs[0].answer_logprob, abs=1e-4)
        if r.target_budget == 0.3 and r.method in ("a", "b", "oracle_topk", "random"):
            assert r.budget == pytest.approx(0.3, abs=0.02)  # exact budgets up to rounding
    with pytest.raises(ValueError, match="not built"):
        evaluate_methods(model, {"paper": indexes["paper"]}, q, a, budgets=(0.3,), variants=variants, build=build,
                         baselines=())


def test_paired_bootstrap_against_a_closed_form():
    ref = [1.0] * 50 + [0.0] * 50
    same = paired_bootstrap(ref, ref)
    assert same["delta"] == 0 and same["low"] == 0 and same["high"] == 0
    worse = [0.0] * 20 + ref[20:]  # 20 of the first 50 flipped: delta = -0.2
    got = paired_bootstrap(worse, ref, resamples=4000)
    assert got["delta"] == pytest.approx(-0.2)
    se = (0.2 * 0.8 / 100) ** 0.5  # the paired differences are Bernoulli(-1 w.p. 0.2)
    assert got["low"] == pytest.approx(-0.2 - 1.96 * se, abs=0.02)
    assert got["high"] == pytest.approx(-0.2 + 1.96 * se, abs=0.02)
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap([1.0], [1.0, 0.0])


def test_depth_bins():
    assert [depth_bin(x) for x in (0.0, 0.19, 0.2, 0.99, 1.0)] == [0, 0, 1, 4, 4]


def test_few_needle_design_with_jitter_words_hint_and_system_turn():
    tok = ByteTokenizer()
    para = source_paragraphs("idle_guide")
    depths_seen = []
    for seed in range(6):
        ctx = build_needle_context(tok, context_tokens=4000, seed=seed, paragraphs=para, single=2, multi_groups=(3,),
                                   qa_facts=1, depth_jitter=True, answer_hint=True)
        text = tok.decode(list(ctx.context_ids))
        assert [q.task for q in ctx.questions] == ["single"] * 2 + ["multi"] * 3 + ["qa"]
        depths = sorted(q.depth for q in ctx.questions)
        # one common offset u in [0.1, 0.9]: needle i at (i + u) / 6 up to sentence granularity
        offsets = [d * 6 - i for i, d in enumerate(depths)]
        assert max(offsets) - min(offsets) < 0.6 and all(-0.15 < u < 1.15 for u in offsets)  # sentence snapping
        depths_seen.append(offsets[0])
        for q in ctx.questions:
            assert "Answer with the number only." in tok.decode(list(q.question_ids))
            assert f" is {q.answer_text}." in text
    assert max(depths_seen) - min(depths_seen) > 0.2  # the offset varies between contexts
    words = build_needle_context(tok, context_tokens=4000, seed=1, paragraphs=para, single=2, multi_groups=(),
                                 qa_facts=1, answer_style="words", system_prompt="You are helpful")
    text = tok.decode(list(words.context_ids))
    assert text.startswith("<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\n")
    for q in words.questions:
        assert tok.decode(list(q.answer_ids)) == " " + q.answer_text and q.answer_text.isalpha()
        assert text.count(f" is {q.answer_text}.") == 1
    with pytest.raises(ValueError, match="answer_style"):
        build_needle_context(tok, context_tokens=4000, seed=1, paragraphs=para, answer_style="letters")
