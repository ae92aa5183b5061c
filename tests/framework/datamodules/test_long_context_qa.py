"""LongContextQADataModule: real text, planted facts findable in the context, seeded, bad input errors."""

from __future__ import annotations

import pytest

from framework.datamodules.long_context_qa import ByteTokenizer, LongContextQADataModule, build_context, prose_paragraphs


def test_prose_is_english_text():
    paragraphs = prose_paragraphs()
    assert len(paragraphs) > 200
    assert all(len(p) >= 80 and not p.startswith(" ") for p in paragraphs[:50])


def test_facts_are_planted_and_questions_answerable():
    tok = ByteTokenizer()
    ctx = build_context(tok, context_tokens=3000, facts=4, seed=3, chat_markup=False)
    assert abs(len(ctx.context_ids) - 3000) < 200
    text = tok.decode(ctx.context_ids)
    assert text.rstrip().endswith("Question:")
    for q, a, code in zip(ctx.questions, ctx.answers, ctx.answer_texts):
        place = tok.decode(q).split("access code for the ")[1].split("?")[0]
        assert f"The access code for the {place} is {code}." in text
        assert tok.decode(a) == code and tok.decode(q).endswith(" is ")
    assert len(set(ctx.answer_texts)) >= 1 and all(0.0 <= d <= 1.0 for d in ctx.fact_depths)


def test_same_seed_same_data_and_other_seed_differs():
    tok = ByteTokenizer()
    a = build_context(tok, context_tokens=1500, facts=2, seed=1, chat_markup=False)
    b = build_context(tok, context_tokens=1500, facts=2, seed=1, chat_markup=False)
    c = build_context(tok, context_tokens=1500, facts=2, seed=2, chat_markup=False)
    assert a == b and a.context_ids != c.context_ids


def test_datamodule_batches_questions_per_context():
    dm = LongContextQADataModule(tokenizer="bytes", context_tokens=[1000, 1200], facts_per_context=2, chat_markup=False)
    dm.setup("test")
    assert len(dm.contexts) == 2
    batches = list(dm.test_dataloader())
    assert len(batches) == 4 and [b[0]["context_index"] for b in batches] == [0, 0, 1, 1]
    assert {"question_ids", "answer_ids", "answer_text", "depth"} <= set(batches[0][0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tokenizer": "gpt2"}, "tokenizer"),
        ({"context_tokens": [10]}, "context_tokens"),
        ({"facts_per_context": 0}, "facts_per_context"),
        ({"contexts_per_length": 0}, "contexts_per_length"),
    ],
)
def test_bad_settings_are_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LongContextQADataModule(**kwargs)


def test_too_short_context_names_the_minimum():
    with pytest.raises(ValueError, match="use at least"):
        build_context(ByteTokenizer(), context_tokens=300, facts=2, seed=0, chat_markup=False)
