"""Many methods on one question in batched rows: dense, Squeezed Attention variants and baselines at target budgets.

Every method answers the same question over the same fixed-context KV; methods are rows of one batch (a
`RowwiseSelector`), split into chunks of at most `chunk_rows` rows to bound the memory of the per-row KV copies.
Squeezed Attention rows name the index variant they use ("paper": no sinks; "sinks": attention sinks kept), all
variants built from one prefill of the context, so they share the fixed-context KV.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from framework.metrics import intervals
from framework.models.components.squeezed.answer_scoring import next_token_kl, score_answer_rows
from framework.models.components.squeezed.baselines import RowwiseSelector
from framework.models.components.squeezed.qa_evaluation import BASELINES, keep_fraction_for_budget
from framework.models.components.squeezed.query_segments import check_scope
from framework.models.components.squeezed.squeezed_attention import SqueezedAttention
from framework.models.components.squeezed.transformers_backend import serve


@dataclass(frozen=True)
class SqueezedVariant:
    """A Squeezed Attention configuration served from one of the context's index variants.

    Attributes:
        index: index variant name (e.g. "paper" = no sinks, "sinks").
        budget_mode: "calibrated" (global threshold) or "topk" (per KV head).
        radius_weight: see `SqueezedAttention`.
        query_aggregation: see `SqueezedAttention`.
        scope: selection scope while serving ("input": the paper; "last"; "token"), see `query_segments`.
        refine: see `SqueezedAttention.refine_ratio` (0 = off).
    """

    index: str
    budget_mode: str = "calibrated"
    radius_weight: float = 0.0
    query_aggregation: str = "mean"
    scope: str = "input"
    refine: float = 0.0


@dataclass
class MethodRecord:
    """One (method, target budget) result on one question (answer metrics + measured budget + diagnostics)."""

    method: str
    target_budget: float
    correct: bool
    token_accuracy: float
    answer_logprob: float
    kl: float
    budget: float
    kept_fraction: float
    output_error: float
    mass_recall: float

    def as_dict(self) -> dict:
        return asdict(self)


def _answer_logprob(logits: torch.Tensor, answer_ids) -> float:
    """log P(answer | question) under teacher forcing: sum of the gold tokens' log-probabilities."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    gold = torch.as_tensor(list(answer_ids), dtype=torch.long)
    return float(logp.gather(1, gold[:, None]).sum())


def squeezed_selector(variant: SqueezedVariant, build: SqueezedAttention, index, target: float) -> SqueezedAttention:
    """The `SqueezedAttention` serving `variant` at total budget `target` (keep fraction solved from it)."""
    keep = keep_fraction_for_budget(target, index, build.levels, refine_ratio=variant.refine)
    return SqueezedAttention(
        centroid_fraction=build.centroid_fraction,
        levels=build.levels,
        coarse_fraction=build.coarse_fraction,
        observation_window=build.observation_window,
        attention_sinks=index.metadata.attention_sinks,
        budget=keep,
        budget_mode=variant.budget_mode,
        kmeans_iters=build.kmeans_iters,
        kmeans_seed=build.kmeans_seed,
        radius_weight=variant.radius_weight,
        query_aggregation=variant.query_aggregation,
        refine_ratio=variant.refine,
    )


def evaluate_methods(
    model: nn.Module,
    indexes: dict,
    question_ids,
    answer_ids,
    *,
    budgets: tuple[float, ...],
    variants: dict[str, SqueezedVariant],
    build: SqueezedAttention,
    baselines: tuple[str, ...],
    chunk_rows: int = 8,
    diagnostics: bool = True,
    baseline_factories: dict[str, Callable[[float], nn.Module]] = BASELINES,
    baseline_budgets: dict[str, tuple[float, ...]] | None = None,
    only_if_dense_correct: bool = False,
) -> list[MethodRecord]:
    """Dense + every (method, budget) on one question.

    Args:
        model: causal LM of the indexes' shape.
        indexes: index variant name -> `FixedContextIndex` (same context, same fixed KV).
        question_ids: [T] user-input tokens; answer_ids: [A] answer tokens.
        budgets: target total budgets (baselines get exactly this; Squeezed rows solve their keep fraction from it).
        variants: method name -> `SqueezedVariant`.
        build: build settings shared by the indexes (centroid fraction, window, k-means).
        baselines: names in `baseline_factories`, optionally with a selection scope: "quest@token" (default "input").
        chunk_rows: rows per batched forward.
        diagnostics: measure output error and attention-mass recall.
        baseline_budgets: optional baseline name -> the budgets it runs at (default: every budget).
        only_if_dense_correct: return the dense record alone when dense attention gets the answer wrong (an
            evaluation on the questions the dense model solves spends nothing on the others).

    Returns:
        records, dense first.
    """
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be an int >= 1, got {chunk_rows!r}")
    unknown = [b for b in baselines if b.split("@")[0] not in baseline_factories]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {sorted(baseline_factories)}")
    missing = sorted({v.index for v in variants.values()} - set(indexes))
    if missing:
        raise ValueError(f"variants use index variants {missing} that were not built")
    served = next(iter(indexes.values()))
    dense = score_answer_rows(model, served, question_ids, answer_ids, rows=1)[0]
    records = [
        MethodRecord("dense", 1.0, dense.correct, dense.token_accuracy, _answer_logprob(dense.logits, answer_ids),
                     0.0, 1.0, 1.0, 0.0, 1.0)
    ]
    if only_if_dense_correct and not dense.correct:
        return records
    for scope in [v.scope for v in variants.values()] + [b.partition("@")[2] or "input" for b in baselines]:
        check_scope(scope)
    rows: list[tuple] = []
    for target in budgets:
        for name, variant in variants.items():
            own = indexes[variant.index]
            rows.append((name, target, squeezed_selector(variant, build, own, target), own, variant.scope))
        for name in baselines:
            base, _, scope = name.partition("@")
            if baseline_budgets is None or name not in baseline_budgets or target in baseline_budgets[name]:
                rows.append((name, target, baseline_factories[base](target), served, scope or "input"))
    records += score_rows(model, served, rows, question_ids, answer_ids, dense_logits=dense.logits,
                          chunk_rows=chunk_rows, diagnostics=diagnostics)
    return records


def score_rows(
    model: nn.Module,
    served,
    rows: list[tuple],
    question_ids,
    answer_ids,
    *,
    dense_logits: torch.Tensor,
    chunk_rows: int = 8,
    diagnostics: bool = True,
) -> list[MethodRecord]:
    """Serve `rows` = (name, target budget, selector, own index[, selection scope]) in batched chunks (rows of one
    scope per chunk); one record per row, in the order of `rows`.

    Args:
        served: the index whose fixed-context KV every row attends.
        dense_logits: [A, V] dense-attention logits of the answer positions (for the KL).
    """
    nan = float("nan")
    by_scope: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_scope.setdefault(row[4] if len(row) > 4 else "input", []).append(i)
    out: dict[int, MethodRecord] = {}
    for scope, members in by_scope.items():
        for start in range(0, len(members), chunk_rows):
            part = members[start : start + chunk_rows]
            selector = RowwiseSelector([rows[i][2] for i in part], [rows[i][3] for i in part])
            with serve(model, served, selector, diagnostics=diagnostics, selection_scope=scope) as session:
                scores = score_answer_rows(model, served, question_ids, answer_ids, rows=len(part), session=session)
            for j, (i, s) in enumerate(zip(part, scores)):
                name, target = rows[i][0], rows[i][1]
                rep = session.budget(j)
                diag = session.attention_diagnostics(j) if diagnostics else None
                out[i] = MethodRecord(
                    name, target, s.correct, s.token_accuracy, _answer_logprob(s.logits, answer_ids),
                    next_token_kl(dense_logits, s.logits), rep.budget, rep.kept_fraction,
                    diag.output_error if diag else nan, diag.mass_recall if diag else nan,
                )
    return [out[i] for i in range(len(rows))]


def paired_bootstrap(method: list[float], reference: list[float], *, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean difference method - reference over paired items with a 95 % percentile bootstrap interval
    (:func:`framework.metrics.intervals.paired_bootstrap`), as the dict the accuracy tables use.

    Args:
        method, reference: per-item values (same items, same order).

    Returns:
        dict(delta, low, high, n).
    """
    if len(method) != len(reference) or not method:
        raise ValueError(f"need two non-empty paired lists, got {len(method)} and {len(reference)} items")
    if len(method) == 1:
        delta = float(method[0]) - float(reference[0])
        return {"delta": delta, "low": delta, "high": delta, "n": 1}
    interval = intervals.paired_bootstrap(method, reference, n_resamples=max(resamples, 100), seed=seed)
    return {"delta": interval.estimate, "low": interval.low, "high": interval.high, "n": interval.n}


def depth_bin(depth: float, bins: int = 5) -> int:
    """Index of the depth bin (0 .. bins-1) of a relative depth in [0, 1]."""
    return min(bins - 1, max(0, int(math.floor(depth * bins))))
