"""Teacher-forced answer scoring over a fixed-context cache (shared by the evaluation module and the benchmark).

The user input (question) is prefilled on top of the fixed-context cache — one key selection per (layer, KV head)
for all its tokens — and each answer token is then fed one at a time as in generation, each step with its own
selection. Greedy generation would emit the answer exactly when every teacher-forced step's argmax is the gold token,
so `correct` equals exact-match accuracy of greedy decoding, at one forward per answer token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class AnswerScore:
    """Scores of one answer.

    Attributes:
        logits: [A, V] fp32 next-token logits before each of the A answer tokens.
        correct: True when every argmax equals the gold token (= greedy exact match).
        token_accuracy: fraction of answer tokens whose argmax is the gold token.
    """

    logits: torch.Tensor
    correct: bool
    token_accuracy: float


@torch.no_grad()
def score_answer_rows(model: nn.Module, index, question_ids, answer_ids, *, rows: int = 1) -> list[AnswerScore]:
    """Teacher-forced scoring of `answer_ids` after `question_ids`, repeated over `rows` batch rows.

    Runs with whatever attention is active: dense outside `serve(...)`, sparse inside it (where a `RowwiseSelector`
    can serve a different method in every row, so several methods cost one batched forward per token).

    Args:
        model: Transformers causal LM.
        index: `FixedContextIndex` (provides the fixed-context KV cache).
        question_ids: [T] token ids of the user input.
        answer_ids: [A] token ids of the answer (A >= 1).
        rows: batch rows (the same question in each).

    Returns:
        one `AnswerScore` per row.
    """
    device = next(model.parameters()).device
    q = torch.as_tensor(question_ids, dtype=torch.long, device=device).view(1, -1)
    a = torch.as_tensor(answer_ids, dtype=torch.long, device=device).view(-1)
    if q.numel() == 0 or a.numel() == 0:
        raise ValueError(f"question and answer must be non-empty, got {q.numel()} and {a.numel()} tokens")
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    cache = index.new_cache(rows)
    # logits of the last position only: the lm head over every question token would be wasted work
    out = model(input_ids=q.expand(rows, -1), cache=cache, use_cache=True, logits_to_keep=1)
    logits = [out.logits[:, -1].float()]
    for token in a[:-1]:
        out = model(input_ids=token.view(1, 1).expand(rows, 1), cache=cache, use_cache=True, logits_to_keep=1)
        logits.append(out.logits[:, -1].float())
    stacked = torch.stack(logits, dim=1).cpu()  # [rows, A, V]
    hits = stacked.argmax(-1) == a.cpu()
    return [
        AnswerScore(logits=stacked[r], correct=bool(hits[r].all()), token_accuracy=float(hits[r].float().mean()))
        for r in range(rows)
    ]


def score_answer(model: nn.Module, index, question_ids, answer_ids) -> AnswerScore:
    """`score_answer_rows` with one row."""
    return score_answer_rows(model, index, question_ids, answer_ids, rows=1)[0]


def next_token_kl(reference_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over positions of KL(reference || other) of the next-token distributions.

    Args:
        reference_logits: [A, V] (dense attention).
        logits: [A, V] (sparse attention).
    """
    ref = torch.log_softmax(reference_logits.float(), dim=-1)
    oth = torch.log_softmax(logits.float(), dim=-1)
    return float((ref.exp() * (ref - oth)).sum(-1).mean())
