"""Ensemble disagreement and polarization as torchmetrics ``Metric``s (exact under DDP), plus a functional API.

All states are sums of integer counts (:class:`~framework.metrics.ensemble_votes.EnsembleVoteCounts`) reduced with
``dist_reduce_fx="sum"``: the values after a DDP sync are *exactly* those of one process over all points (η is a
ratio of global means, never a mean of per-rank ratios). Definitions are in :mod:`framework.metrics.ensemble_bounds`.

Inputs of ``update(preds, target)``: member class ids ``[M, N]`` or member logits ``[M, N, K]``, labels ``[N]``.

``EnsemblePolarization`` returns every scalar at once (a dict, for ``MetricCollection`` / ``log_dict``); the thin
single-value classes below it (``Polarization``, ``EnsembleDisagreement``, ...) return one tensor each and share the
same states, so a ``MetricCollection`` of several of them updates the counts once (torchmetrics compute groups).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from framework.metrics.ensemble_bounds import (
    POLARIZATION_LAW_ETA,
    EnsembleStatistics,
    ensemble_statistics,
)
from framework.metrics.ensemble_votes import TIE_RULES, EnsembleVoteCounts, ensemble_vote_counts

__all__ = [
    "EnsemblePolarization",
    "PointwiseErrorDistribution",
    "EnsembleDisagreement",
    "BothWrongDisagreement",
    "Polarization",
    "MajorityVoteError",
    "PolarizationBound",
    "CBound",
    "CompetenceBound",
    "PredictedMajorityVoteError",
    "ensemble_polarization_statistics",
]

_PAIR_CONVENTIONS = ("all", "distinct")


def ensemble_polarization_statistics(
    preds: Tensor, target: Tensor, *, num_classes: int | None = None, tie_rule: str = "lowest_class"
) -> EnsembleStatistics:
    """All ensemble statistics of one set of points in one call.

    Args:
        preds: ``[M, N]`` member class ids or ``[M, N, K]`` member logits / probabilities.
        target: ``[N]`` labels in ``[0, K)``.
        num_classes: ``K`` (required with class ids).
        tie_rule: majority-vote tie rule, one of ``TIE_RULES``.

    Returns:
        :class:`EnsembleStatistics` (η is NaN, with a warning, when no member errs anywhere).
    """
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie_rule must be one of {list(TIE_RULES)}, got {tie_rule!r}")
    k = preds.shape[-1] if preds.dim() == 3 else num_classes
    counts = ensemble_vote_counts(preds, target, num_classes=num_classes, tie_rule=tie_rule)
    return ensemble_statistics(counts, num_classes=int(k), tie_rule=tie_rule)


def _require_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class EnsemblePolarization(Metric):
    """Disagreement / polarization statistics of an M-member ensemble, accumulated over batches.

    ``compute()`` returns a dict of scalar tensors (keys of :meth:`EnsembleStatistics.as_dict`);
    :meth:`compute_statistics` returns the full :class:`EnsembleStatistics` (with the W distribution).

    Args:
        num_members: M (>= 2); every update must have M rows.
        num_classes: K (>= 2).
        tie_rule: majority-vote tie rule (``"lowest_class"``, ``"pessimistic"``, ``"expected_random"``).
        **kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``process_group``, ...).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, *, num_members: int, num_classes: int, tie_rule: str = "lowest_class", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _require_int("num_members", num_members, 2)
        _require_int("num_classes", num_classes, 2)
        if tie_rule not in TIE_RULES:
            raise ValueError(f"tie_rule must be one of {list(TIE_RULES)}, got {tie_rule!r}")
        self.num_members = num_members
        self.num_classes = num_classes
        self.tie_rule = tie_rule
        m = num_members
        long = torch.long
        self.add_state("num_points", default=torch.tensor(0, dtype=long), dist_reduce_fx="sum")
        self.add_state("member_errors", default=torch.zeros(m, dtype=long), dist_reduce_fx="sum")
        self.add_state("wrong_count_histogram", default=torch.zeros(m + 1, dtype=long), dist_reduce_fx="sum")
        self.add_state("pair_disagreements", default=torch.zeros(m, m, dtype=long), dist_reduce_fx="sum")
        self.add_state("pair_wrong_disagreements", default=torch.zeros(m, m, dtype=long), dist_reduce_fx="sum")
        self.add_state("majority_vote_errors", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("majority_vote_ties", default=torch.tensor(0, dtype=long), dist_reduce_fx="sum")
        self._statistics: EnsembleStatistics | None = None

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: ``preds`` ``[M, B]`` class ids or ``[M, B, K]`` logits, ``target`` ``[B]``."""
        if preds.dim() in (2, 3) and preds.shape[0] != self.num_members:
            raise ValueError(
                f"this metric was built for num_members={self.num_members} but preds has M={preds.shape[0]} "
                f"members (shape {list(preds.shape)})"
            )
        counts = ensemble_vote_counts(preds, target, num_classes=self.num_classes, tie_rule=self.tie_rule)
        self.num_points += counts.num_points
        self.member_errors += counts.member_errors
        self.wrong_count_histogram += counts.wrong_count_histogram
        self.pair_disagreements += counts.pair_disagreements
        self.pair_wrong_disagreements += counts.pair_wrong_disagreements
        self.majority_vote_errors += counts.majority_vote_errors.to(self.majority_vote_errors.dtype)
        self.majority_vote_ties += counts.majority_vote_ties

    def counts(self) -> EnsembleVoteCounts:
        """The accumulated (local, unsynced outside ``compute``) counts."""
        return EnsembleVoteCounts(
            num_points=self.num_points,
            member_errors=self.member_errors,
            wrong_count_histogram=self.wrong_count_histogram,
            pair_disagreements=self.pair_disagreements,
            pair_wrong_disagreements=self.pair_wrong_disagreements,
            majority_vote_errors=self.majority_vote_errors,
            majority_vote_ties=self.majority_vote_ties,
        )

    def _statistics_now(self) -> EnsembleStatistics:
        # Called inside compute(), i.e. on synced states.
        self._statistics = ensemble_statistics(self.counts(), num_classes=self.num_classes, tie_rule=self.tie_rule)
        return self._statistics

    def compute(self) -> dict[str, Tensor]:
        stats = self._statistics_now()
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in stats.as_dict().items()}

    def compute_statistics(self) -> EnsembleStatistics:
        """Synced :class:`EnsembleStatistics` (calls ``compute()``; call it on every rank under DDP)."""
        self.compute()
        assert self._statistics is not None
        return self._statistics

    def reset(self) -> None:
        super().reset()
        self._statistics = None


class _SingleValue(EnsemblePolarization):
    """One number of :class:`EnsemblePolarization` (same states, so compute groups share the update)."""

    @abstractmethod
    def _value(self, stats: EnsembleStatistics) -> float | list[float]:
        """The reported value, from the synced statistics."""

    def compute(self) -> Tensor:  # type: ignore[override]
        return torch.tensor(self._value(self._statistics_now()), dtype=torch.float64)


class PointwiseErrorDistribution(_SingleValue):
    """Distribution of the point-wise error rate: ``[M + 1]`` tensor of ``P(W = k / M)``."""

    def _value(self, stats: EnsembleStatistics) -> list[float]:
        return list(stats.w_distribution)


class EnsembleDisagreement(_SingleValue):
    """Disagreement D. ``pairs="all"``: over the M² ordered pairs, self-pairs included (the paper's D(ρ));
    ``pairs="distinct"``: over the M(M-1) distinct pairs (= M/(M-1) · D)."""

    higher_is_better = None

    def __init__(self, *, pairs: str = "all", **kwargs: Any) -> None:
        if pairs not in _PAIR_CONVENTIONS:
            raise ValueError(f"pairs must be one of {list(_PAIR_CONVENTIONS)}, got {pairs!r}")
        super().__init__(**kwargs)
        self.pairs = pairs

    def _value(self, stats: EnsembleStatistics) -> float:
        return stats.disagreement if self.pairs == "all" else stats.disagreement_pairs


class BothWrongDisagreement(_SingleValue):
    """T: probability that two members are both wrong and disagree (``pairs`` as in :class:`EnsembleDisagreement`)."""

    def __init__(self, *, pairs: str = "all", **kwargs: Any) -> None:
        if pairs not in _PAIR_CONVENTIONS:
            raise ValueError(f"pairs must be one of {list(_PAIR_CONVENTIONS)}, got {pairs!r}")
        super().__init__(**kwargs)
        self.pairs = pairs

    def _value(self, stats: EnsembleStatistics) -> float:
        return stats.both_wrong_disagreement if self.pairs == "all" else stats.both_wrong_disagreement_pairs


class Polarization(_SingleValue):
    """η = P(W > 1/2) / E[W²]; NaN (with ``PolarizationUndefinedWarning``) for an error-free ensemble."""

    def _value(self, stats: EnsembleStatistics) -> float:
        return stats.polarization


class MajorityVoteError(_SingleValue):
    """Error of the majority vote under ``tie_rule``."""

    higher_is_better = False

    def _value(self, stats: EnsembleStatistics) -> float:
        return stats.majority_vote_error


class PolarizationBound(_SingleValue):
    """``η · (L̄ - D/2 + T/2)``; ``eta``: a number (default the law's 4/3) or ``"measured"``."""

    def __init__(self, *, eta: float | str = POLARIZATION_LAW_ETA, **kwargs: Any) -> None:
        if eta != "measured" and not (isinstance(eta, (int, float)) and not isinstance(eta, bool) and eta > 0
                                      and math.isfinite(eta)):
            raise ValueError(f"eta must be a positive number or 'measured', got {eta!r}")
        super().__init__(**kwargs)
        self.eta = eta

    def _value(self, stats: EnsembleStatistics) -> float:
        return stats.bound(stats.polarization if self.eta == "measured" else float(self.eta))


class CBound(_SingleValue):
    """Chebyshev-Cantelli C-bound ``(E[W²] - L̄²) / (E[W²] - L̄ + 1/4)`` (binary: ``1 - (1-2L̄)²/(1-2D)``)."""

    def _value(self, stats: EnsembleStatistics) -> float:
        return stats.c_bound


class CompetenceBound(_SingleValue):
    """Theisen et al. (2023) ``4 (K-1)/K · (L̄ - D/2)``, valid for competent ensembles."""

    def _value(self, stats: EnsembleStatistics) -> float:
        return stats.competence_bound


class PredictedMajorityVoteError(_SingleValue):
    """Predicted majority-vote error of a ``target_members``-member ensemble from this (smaller) one.

    Args:
        target_members: the ensemble size to predict for (an int >= 1, or ``math.inf``).
        eta: ``"law"`` (4/3), ``"measured"`` (η of the accumulated ensemble) or a positive number.
    """

    def __init__(self, *, target_members: int | float, eta: float | str = "law", **kwargs: Any) -> None:
        if not (isinstance(target_members, (int, float)) and not isinstance(target_members, bool)
                and target_members >= 1):
            raise ValueError(f"target_members must be >= 1 (or math.inf), got {target_members!r}")
        if eta not in ("law", "measured") and not (isinstance(eta, (int, float)) and not isinstance(eta, bool)
                                                   and eta > 0 and math.isfinite(eta)):
            raise ValueError(f"eta must be 'law', 'measured' or a positive number, got {eta!r}")
        super().__init__(**kwargs)
        self.target_members = target_members
        self.eta = eta

    def _value(self, stats: EnsembleStatistics) -> float:
        return stats.predict_majority_vote_error(self.target_members, self.eta)
