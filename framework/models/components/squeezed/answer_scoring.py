"""Teacher-forced answer scoring over a fixed-context cache (shared by the evaluation module and the benchmark).

Greedy generation emits the answer exactly when, at every answer position, the argmax of the next-token logits given
the gold prefix is the gold token; so `correct` equals greedy exact match. By default the user input and the answer
(but its last token) go through the model in ONE forward pass, logits kept at the A answer positions. Inside
`serve(...)` the session is told that the last A - 1 positions are decode steps (`ServingSession.teacher_forced`),
so every method makes the same key selections as prefill + token-by-token decoding (one for the user input under
the paper's scope, one per answer token). `one_pass=False` runs the token-by-token loop (the reference).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from framework.models.components.squeezed.transformers_backend import active_session


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
def score_answer_rows(
    model: nn.Module, index, question_ids, answer_ids, *, rows: int = 1, session=None, one_pass: bool = True
) -> list[AnswerScore]:
    """Teacher-forced scoring of `answer_ids` after `question_ids`, repeated over `rows` batch rows.

    Runs with whatever attention is active: dense outside `serve(...)`, sparse inside it (where a `RowwiseSelector`
    can serve a different method in every row, so several methods cost one batched forward).

    Args:
        model: Transformers causal LM.
        index: `FixedContextIndex` (provides the fixed-context KV cache).
        question_ids: [T] token ids of the user input.
        answer_ids: [A] token ids of the answer (A >= 1).
        rows: batch rows (the same question in each).
        session: the `ServingSession` serving the model; None = the one attached by an enclosing `serve(...)`, if
            any (one_pass marks the answer positions as decode steps on it, so they select like decode steps).
        one_pass: one forward over question + answer[:-1] (default) instead of one forward per answer token.

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
    if session is None:
        session = active_session(model)
    if one_pass:
        tokens = torch.cat([q.view(-1), a[:-1]]).view(1, -1).expand(rows, -1)
        forced = session.teacher_forced(a.numel() - 1) if session is not None else nullcontext()
        with forced:
            # logits of the A answer positions only: the lm head over every question token would be wasted work
            out = model(input_ids=tokens, cache=cache, use_cache=True, logits_to_keep=a.numel())
        stacked = out.logits[:, -a.numel() :].float().cpu()  # [rows, A, V]
    else:
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
