"""One question answered by dense attention, Squeezed Attention at several budgets, and the baselines at the budget
Squeezed Attention measured (shared by `framework.models.squeezed_attention_eval` and `benchmarks/squeezed_attention_accuracy.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from framework.models.components.squeezed.answer_scoring import next_token_kl, score_answer, score_answer_rows
from framework.models.components.squeezed.baselines import OracleTopK, QuestPages, RandomKeys, RowwiseSelector, SlidingWindowSinks
from framework.models.components.squeezed.fixed_context_index import FixedContextIndex
from framework.models.components.squeezed.product_quantized_selection import ProductQuantizedTopK
from framework.models.components.squeezed.squeezed_attention import SqueezedAttention
from framework.models.components.squeezed.transformers_backend import serve

BASELINES: dict[str, Callable[[float], nn.Module]] = {
    "oracle_topk": lambda b: OracleTopK(budget=b),
    "quest": lambda b: QuestPages(budget=b, page_size=16),
    "window_sinks": lambda b: SlidingWindowSinks(budget=b, sinks=4),
    "random": lambda b: RandomKeys(budget=b, seed=0),
    "pq_topk": lambda b: ProductQuantizedTopK(budget=b, subspaces=8, codewords=16),
    "pq_sinks_window": lambda b: ProductQuantizedTopK(budget=b, subspaces=8, codewords=16, sinks=4, window=100),
    # Finer quantizers, paid from the same budget (session 7 validation): 16 groups of 4 channels, or 32 codewords.
    "pq_m16_sinks_window": lambda b: ProductQuantizedTopK(budget=b, subspaces=16, codewords=16, sinks=4, window=100),
    "pq_k32_sinks_window": lambda b: ProductQuantizedTopK(budget=b, subspaces=8, codewords=32, sinks=4, window=100),
    # Shorter always-kept windows (session 9): at 2K and budget 0.125 the 100-key window + 4 sinks take 104 of the
    # ~184 keys left after the codes, so the estimate chooses only ~80.
    "pq_m16_sinks_w32": lambda b: ProductQuantizedTopK(budget=b, subspaces=16, codewords=16, sinks=4, window=32),
    "pq_m16_sinks": lambda b: ProductQuantizedTopK(budget=b, subspaces=16, codewords=16, sinks=4, window=0),
    # Keys spent jointly over a layer's KV heads by estimated probability (session 10; same total, same budget).
    "pq_m16_sinks_mass": lambda b: ProductQuantizedTopK(budget=b, subspaces=16, codewords=16, sinks=4, window=0,
                                                        head_allocation="mass"),
    # The estimate shortlists r·K keys, exact scores keep K (session 12; the candidates are charged to the budget).
    "pq_m16_sinks_refine2": lambda b: ProductQuantizedTopK(budget=b, subspaces=16, codewords=16, sinks=4, window=0,
                                                           refine_ratio=2.0),
    "pq_m16_sinks_refine4": lambda b: ProductQuantizedTopK(budget=b, subspaces=16, codewords=16, sinks=4, window=0,
                                                           refine_ratio=4.0),
}
# The rows every evaluation runs unless told otherwise (the paper's comparison set).
DEFAULT_BASELINES = ("oracle_topk", "quest", "window_sinks", "random")


@dataclass
class QuestionRecord:
    """One (method, target budget) result for one question.

    Attributes:
        method: "dense", "squeezed" or a baseline name.
        target_budget: the requested total budget (1.0 for dense).
        correct: greedy exact match of the answer.
        token_accuracy: fraction of answer tokens predicted.
        kl: next-token KL(dense || method), mean over answer positions.
        budget: measured budget (§3.7).
        kept_fraction: measured fraction of fixed-context keys attended.
        output_error: mean relative attention-output error against dense attention (same q/k/v).
        mass_recall: mean exact attention mass on the selected fixed-context keys.
    """

    method: str
    target_budget: float
    correct: bool
    token_accuracy: float
    kl: float
    budget: float
    kept_fraction: float
    output_error: float
    mass_recall: float


def keep_fraction_for_budget(
    total: float, index: FixedContextIndex, levels: int, *, refine_ratio: float = 0.0
) -> float:
    """Clustered-key keep fraction whose expected total budget on the calibration queries is `total`.

    total = keep * Nc / N + (W + S) / N + (centroids + candidates) / (2N) with Nc = N - W - S clustered keys and
    candidates = refine_ratio * keep * Nc read as keys by exact refinement (0 without it), solved for keep and
    clipped to (0, 1].

    Raises:
        ValueError: when `total` is below the fixed cost of the window, sinks and centroids.
    """
    if not (0.0 < total <= 1.0):
        raise ValueError(f"target budget must be in (0, 1], got {total}")
    n = index.metadata.context_length
    fixed = index.metadata.observation_window + index.metadata.attention_sinks
    meta = index.layers[0].metadata_vectors(levels)
    keep = (total - fixed / n - meta / (2 * n)) * n / ((n - fixed) * (1.0 + refine_ratio / 2.0))
    if keep <= 0:
        raise ValueError(
            f"target budget {total} is below the fixed cost of the observation window, sinks and centroids "
            f"({fixed / n + meta / (2 * n):.3f}) at N={n}"
        )
    return min(1.0, keep)


def evaluate_question(
    model: nn.Module,
    index: FixedContextIndex,
    question_ids,
    answer_ids,
    *,
    budgets: tuple[float, ...],
    settings: SqueezedAttention,
    baselines: tuple[str, ...] = DEFAULT_BASELINES,
    diagnostics: bool = True,
    method_name: str = "squeezed",
    extra_variants: tuple[tuple[str, SqueezedAttention, FixedContextIndex], ...] = (),
) -> list[QuestionRecord]:
    """Dense, Squeezed Attention at each target budget, and each baseline at Squeezed Attention's measured budget.

    Methods run as rows of one batch (a `RowwiseSelector`): one batched pass for the Squeezed Attention rows, one
    for the baselines (which need the budgets measured in the first).

    Args:
        model: Transformers causal LM whose shape matches `index`.
        index: the fixed context's index.
        question_ids: [T] user-input tokens.
        answer_ids: [A] answer tokens.
        budgets: target total budgets in (0, 1].
        settings: build settings of `index` (its threshold/budget fields are replaced per target).
        baselines: names from `BASELINES`.
        diagnostics: measure output error / mass recall (costs one dense attention per layer call).
        method_name: name of the Squeezed Attention rows.
        extra_variants: (name, build settings, index) of further Squeezed Attention variants over the same context
            (e.g. the paper's configuration without attention sinks); evaluated like the main one.

    Returns:
        records, dense first.
    """
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {sorted(BASELINES)}")
    nan = float("nan")
    dense = score_answer(model, index, question_ids, answer_ids)
    records = [QuestionRecord("dense", 1.0, dense.correct, dense.token_accuracy, 0.0, 1.0, 1.0, 0.0, 1.0)]

    def run(rows: list[tuple[str, float, nn.Module, FixedContextIndex]]) -> list[QuestionRecord]:
        selector = RowwiseSelector([r[2] for r in rows], [r[3] for r in rows])
        with serve(model, index, selector, diagnostics=diagnostics) as session:
            scores = score_answer_rows(model, index, question_ids, answer_ids, rows=len(rows))
        out = []
        for i, ((name, target, _, _), s) in enumerate(zip(rows, scores)):
            rep, diag = session.budget(i), session.attention_diagnostics(i)
            out.append(
                QuestionRecord(
                    name, target, s.correct, s.token_accuracy, next_token_kl(dense.logits, s.logits), rep.budget,
                    rep.kept_fraction, diag.output_error if diagnostics else nan,
                    diag.mass_recall if diagnostics else nan,
                )
            )
        return out

    variants = [(method_name, settings, index), *extra_variants]
    sa_rows = [
        (name, target, _with_budget(cfg, keep_fraction_for_budget(target, own, cfg.levels)), own)
        for target in budgets
        for name, cfg, own in variants
    ]
    sa_records = run(sa_rows)
    records += sa_records
    if baselines:
        measured = {r.target_budget: min(1.0, r.budget) for r in sa_records if r.method == method_name}
        rows = [(name, t, BASELINES[name](measured[t]), index) for t in budgets for name in baselines]
        records += run(rows)
    return records


def _with_budget(settings: SqueezedAttention, keep: float) -> SqueezedAttention:
    """A copy of `settings` serving the calibrated threshold (or top-k) for keep fraction `keep`."""
    return SqueezedAttention(
        centroid_fraction=settings.centroid_fraction,
        levels=settings.levels,
        coarse_fraction=settings.coarse_fraction,
        observation_window=settings.observation_window,
        attention_sinks=settings.attention_sinks,
        budget=keep,
        budget_mode=settings.budget_mode,
        coarse_keep=settings.coarse_keep,
        kmeans_iters=settings.kmeans_iters,
        kmeans_seed=settings.kmeans_seed,
        radius_weight=settings.radius_weight,
        query_aggregation=settings.query_aggregation,
        backend=settings.backend,
    )
