"""Needle retrieval over a fixed context: many needles per context, so one index serves many questions.

One context = instruction + real English prose (an offline text source) with needles inserted at sentence
boundaries at uniformly spread depths ((i + 0.5) / M for M needles, seeded assignment of needles to depths) +
instruction repeated + "Question:" (the LongBench `*_prompt` layout, so the observation window reads like a query).
Three question types share every context:

- "single": "The <kind> of the <place> is <4 digits>." whose <kind> occurs once in the context (no distractor of
  the same format);
- "multi": groups of 3-5 needles sharing one <kind> with different places and codes, so every question has 2-4
  distractor codes of the same format;
- "qa": the planted-fact QA of `long_context_qa` ("The access code for the <place> is <3 digits>."), all of one
  format (every fact is a distractor for the others).

The user input is the question plus the start of the answer sentence; the answer is the digits.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from framework.datamodules.long_context_qa import INSTRUCTION, PLACES

TASKS = ("single", "multi", "qa")
KINDS = (
    "secret number", "locker number", "room number", "serial number", "ticket number", "badge number",
    "parcel number", "gate number", "phone extension", "pin code", "vault number", "permit number",
)
# Single-token, concrete English nouns for answer_style="words" (none of them occurs in the offline texts' topics).
ANSWER_WORDS = (
    "apple", "tiger", "violin", "pepper", "canoe", "walnut", "parrot", "spoon", "lemon", "falcon", "carpet",
    "rabbit", "banana", "helmet", "dolphin", "pumpkin", "cherry", "penguin", "candle", "turtle", "orange", "hammer",
    "guitar", "onion", "squirrel", "pillow", "mango", "donkey", "kettle", "zebra", "butter", "saddle",
)
ANSWER_STYLES = ("digits", "words")
NEEDLE_STYLES = ("sentence", "colon")
NEEDLE_INSTRUCTION_WORDS = (
    "Read the following document carefully. It contains secret words and access codes for several places. "
    "Answer the question with the word from the document."
)
SMOLLM2_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
NEEDLE_INSTRUCTION = (
    "Read the following document carefully. It contains numbers and access codes for several places. "
    "Answer the question with the number from the document."
)


@dataclass(frozen=True)
class NeedleQuestion:
    """One question about one needle.

    Attributes:
        task: "single", "multi" or "qa".
        question_ids: user-input tokens (question + start of the answer sentence).
        answer_ids: the answer's tokens (digits).
        answer_text: the digits.
        depth: relative position (0..1) of the needle in the document.
        distractors: needles of the same format elsewhere in the context.
    """

    task: str
    question_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]
    answer_text: str
    depth: float
    distractors: int


@dataclass(frozen=True)
class NeedleContext:
    """A fixed context and its questions."""

    context_ids: tuple[int, ...]
    questions: tuple[NeedleQuestion, ...]
    source: str
    seed: int


def _sentences(paragraphs, start: int, tokenizer, budget: int) -> list[str]:
    """Sentences from consecutive paragraphs (wrapping around) until `budget` tokens are used."""
    out, used, i = [], 0, start
    while used < budget:
        para = paragraphs[i % len(paragraphs)]
        i += 1
        for sent in re.split(r"(?<=[.!?;:])\s+", para):
            n = len(tokenizer.encode(" " + sent))
            if used + n > budget:
                return out
            out.append(sent)
            used += n
        if i - start > 100 * len(paragraphs):
            break
    return out


def build_needle_context(
    tokenizer,
    *,
    context_tokens: int,
    seed: int,
    paragraphs,
    source: str = "",
    single: int = 6,
    multi_groups: tuple[int, ...] = (3, 4),
    qa_facts: int = 4,
    chat_markup: bool = True,
    depth_jitter: bool = False,
    answer_style: str = "digits",
    system_prompt: str | None = None,
    answer_hint: bool = False,
    answer_prefix: bool = True,
    needle_style: str = "sentence",
) -> NeedleContext:
    """Assemble one context of about `context_tokens` tokens (seeded).

    Args:
        tokenizer: object with `encode(text) -> list[int]`.
        context_tokens: target length in tokens.
        seed: seed of the text start, kinds, places, codes and depths.
        paragraphs: prose paragraphs (e.g. `offline_texts.source_paragraphs(name)`).
        source: name of the text source (recorded).
        single: needles whose kind is unique in the context.
        multi_groups: sizes (3-5) of groups of needles sharing a kind.
        qa_facts: planted "access code" facts (3 digits).
        chat_markup: SmolLM2 chat template around the document / answer.
        depth_jitter: place needle slot i at depth (i + u) / M with one seeded u ~ U(0.1, 0.9) per context instead
            of u = 0.5, so that contexts with few needles still cover all depths between them.
        answer_style: "digits" (4-digit codes; 3-digit access codes for "qa") or "words" (a distinct noun from
            `ANSWER_WORDS` per needle).
        system_prompt: a system turn before the user turn (chat markup only), e.g. `SMOLLM2_SYSTEM_PROMPT`.
        answer_hint: end the question with "Answer with the number only." (or "the word") before the answer.
        answer_prefix: the assistant turn starts with the answer sentence ("The <kind> of the <place> is") and the
            code follows it; False: the assistant turn is the code alone.
        needle_style: "sentence" ("The <kind> of the <place> is 4821.") or "colon" ("The <kind> of the <place>:4821.",
            the code right after the place, no space between).
    """
    if needle_style not in NEEDLE_STYLES:
        raise ValueError(f"needle_style must be one of {NEEDLE_STYLES}, got {needle_style!r}")
    link = " is " if needle_style == "sentence" else ":"
    if answer_style not in ANSWER_STYLES:
        raise ValueError(f"answer_style must be one of {ANSWER_STYLES}, got {answer_style!r}")
    if any(not 3 <= g <= 5 for g in multi_groups):
        raise ValueError(f"multi_groups sizes must be in [3, 5] (2-4 distractors), got {multi_groups}")
    needles_total = single + sum(multi_groups) + qa_facts
    if single + len(multi_groups) > len(KINDS) or needles_total > len(PLACES) or needles_total < 1:
        raise ValueError(
            f"{single} single needles + {len(multi_groups)} groups need <= {len(KINDS)} kinds and "
            f"{needles_total} needles <= {len(PLACES)} places"
        )
    rng = random.Random(seed)
    kinds = rng.sample(KINDS, single + len(multi_groups))
    places = rng.sample(PLACES, needles_total)
    codes4 = rng.sample(range(1000, 10000), single + sum(multi_groups))
    codes3 = rng.sample(range(100, 1000), qa_facts)
    if answer_style == "words":
        if needles_total > len(ANSWER_WORDS):
            raise ValueError(f"answer_style='words' supports at most {len(ANSWER_WORDS)} needles, got {needles_total}")
        words = rng.sample(ANSWER_WORDS, needles_total)
        codes4, codes3 = words[: len(codes4)], words[len(codes4) :]
    needles = []  # (task, statement, question, answer prefix, code, distractors)
    p = 0
    for i in range(single):
        k, pl, c = kinds[i], places[p], str(codes4[i])
        needles.append(("single", f"The {k} of the {pl}{link}{c}.", f"What is the {k} of the {pl}?",
                        f"The {k} of the {pl}{link.rstrip()}", c, 0))
        p += 1
    ci = single
    for g, size in enumerate(multi_groups):
        k = kinds[single + g]
        for _ in range(size):
            pl, c = places[p], str(codes4[ci])
            needles.append(("multi", f"The {k} of the {pl}{link}{c}.", f"What is the {k} of the {pl}?",
                            f"The {k} of the {pl}{link.rstrip()}", c, size - 1))
            p += 1
            ci += 1
    for j in range(qa_facts):
        pl, c = places[p], str(codes3[j])
        needles.append(("qa", f"The access code for the {pl}{link}{c}.",
                        f"What is the access code for the {pl}?", f"The access code for the {pl}{link.rstrip()}", c,
                        qa_facts - 1))
        p += 1
    system = f"<|im_start|>system\n{system_prompt}<|im_end|>\n" if chat_markup and system_prompt else ""
    instruction = NEEDLE_INSTRUCTION if answer_style == "digits" else NEEDLE_INSTRUCTION_WORDS
    head = (system + "<|im_start|>user\n" if chat_markup else "") + instruction + "\n\n"
    tail = "\n\n" + instruction + "\n\nQuestion:"
    fixed = len(tokenizer.encode(head + tail)) + sum(len(tokenizer.encode(" " + n[1])) for n in needles)
    budget = context_tokens - fixed
    if budget < 16 * needles_total:
        raise ValueError(
            f"context_tokens={context_tokens} is too short for {needles_total} needles: "
            f"use at least {fixed + 16 * needles_total} tokens"
        )
    sentences = _sentences(paragraphs, rng.randrange(len(paragraphs)), tokenizer, budget)
    # Needle i goes to depth (slot + 0.5) / M: the sentence boundary closest to that fraction of the prose.
    slots = list(range(needles_total))
    rng.shuffle(slots)
    offset = rng.uniform(0.1, 0.9) if depth_jitter else 0.5
    lengths = [len(s) + 1 for s in sentences]
    total = max(1, sum(lengths))
    cum = [0]
    for n in lengths:
        cum.append(cum[-1] + n)
    inserts: dict[int, list[int]] = {}
    depths = [0.0] * needles_total
    for ni, slot in enumerate(slots):
        target = (slot + offset) / needles_total * total
        boundary = min(range(len(cum)), key=lambda b: abs(cum[b] - target))
        inserts.setdefault(boundary, []).append(ni)
        depths[ni] = cum[boundary] / total
    pieces = []
    for b in range(len(sentences) + 1):
        for ni in sorted(inserts.get(b, []), key=lambda n: slots[n]):
            pieces.append(needles[ni][1])
        if b < len(sentences):
            pieces.append(sentences[b])
    context_ids = tokenizer.encode(head + " ".join(pieces) + tail)
    questions = []
    for ni, (task, _, q, prefix, code, distractors) in enumerate(needles):
        if answer_hint:
            q = f"{q} Answer with the {'number' if answer_style == 'digits' else 'word'} only."
        if not answer_prefix:
            prefix = ""
        text = f" {q}" + (f"<|im_end|>\n<|im_start|>assistant\n{prefix}" if chat_markup else f"\nAnswer: {prefix}")
        # digits are split off the space before them; a word keeps its leading space in one token
        full = tokenizer.encode(f"{text} {code}" if prefix and needle_style == "sentence" else f"{text}{code}")
        answer = tokenizer.encode(code if answer_style == "digits" else f" {code}")
        if full[-len(answer) :] != answer:
            raise ValueError(f"the tokenizer does not split the code {code!r} off the answer sentence")
        questions.append(
            NeedleQuestion(task, tuple(full[: -len(answer)]), tuple(answer), code, depths[ni], distractors)
        )
    return NeedleContext(tuple(context_ids), tuple(questions), source, seed)
