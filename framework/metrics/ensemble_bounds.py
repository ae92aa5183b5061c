"""Ensemble statistics from vote counts: W, disagreement, T, polarization, majority-vote bounds, and the M-predictor.

Definitions (Kim, Hodgkinson, Theisen, Mahoney, "How many classifiers do we need?", NeurIPS 2024; notation of
``shared/research/polarization_alphapruning.md`` Part 1). ρ is uniform over the M members; h, h' ~ ρ independently.

- Point-wise error rate ``W(x, y) = P_h[h(x) != y]`` (fraction of wrong members), taking values ``k / M``.
- Mean member error ``L̄ = E_ρ[L(h)] = E[W]``.
- Disagreement ``D = E_{h,h'} P[h(X) != h'(X)]`` over all M² ordered pairs, self-pairs included (they add 0);
  ``D_pairs`` averages over the M(M-1) distinct pairs: ``D_pairs = M / (M - 1) · D``.
- ``T = E_{h,h'} P[h wrong, h' wrong, h != h']`` (both wrong *and* disagreeing; 0 for K = 2), same two conventions.
- Exact identity (any K): ``E[W²] = L̄ - D/2 + T/2``.
- Polarization ``η = P(W > 1/2) / E[W²]``; undefined (NaN, with a warning) when no member errs on any point.
- Majority vote errs only where ``W >= 1/2``; with no point at ``W = 1/2`` (odd M), ``L_MV <= P(W > 1/2) =
  η · E[W²]``. Plugging a polarization from elsewhere (the law ``η = 4/3``) gives the bound
  ``η · (L̄ - D/2 + T/2)``.
- C-bound (second-order Chebyshev-Cantelli on the margin ``1 - 2W``): ``(E[W²] - L̄²) / (E[W²] - L̄ + 1/4)``
  when ``L̄ < 1/2`` (else 1). For K = 2 this is the classic ``1 - (1 - 2L̄)² / (1 - 2D)``.
- Competence bound (Theisen et al. 2023, for *competent* ensembles): ``4 (K - 1) / K · (L̄ - D/2)``.
- Size-M predictor from a few members (population average over i.i.d. members):
  ``L_MV(M) ≈ η · [L̄ + (1 - 1/M) (T_pairs - D_pairs) / 2]`` with the law's η = 4/3 or a measured η.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from framework.metrics.ensemble_votes import EnsembleVoteCounts

__all__ = [
    "POLARIZATION_LAW_ETA",
    "PolarizationUndefinedWarning",
    "EnsembleStatistics",
    "ensemble_statistics",
    "polarization_from_w",
    "polarization_bound",
    "c_bound",
    "competence_bound",
    "is_competent",
    "predict_majority_vote_error",
]

#: The neural polarization law: interpolating neural-network ensembles are 4/3-polarized.
POLARIZATION_LAW_ETA = 4.0 / 3.0


class PolarizationUndefinedWarning(UserWarning):
    """Polarization asked of an ensemble with ``E[W²] = 0`` (no member errs on any point): the result is NaN."""


def polarization_from_w(p_above_half: float, second_moment: float) -> float:
    """``η = P(W > 1/2) / E[W²]``; NaN with a :class:`PolarizationUndefinedWarning` when ``E[W²] = 0``."""
    if second_moment <= 0.0:
        warnings.warn(
            "polarization is undefined for an error-free ensemble (E[W^2] = 0: no member errs on any point); "
            "returning NaN",
            PolarizationUndefinedWarning,
            stacklevel=3,
        )
        return math.nan
    return p_above_half / second_moment


def polarization_bound(eta: float, mean_member_error: float, disagreement: float, both_wrong_disagreement: float) -> float:
    """``η · (L̄ - D/2 + T/2)`` with self-pair-inclusive D and T (= ``η · E[W²]``)."""
    return eta * (mean_member_error - disagreement / 2.0 + both_wrong_disagreement / 2.0)


def c_bound(mean_member_error: float, second_moment: float) -> float:
    """Chebyshev-Cantelli C-bound on the majority-vote error from ``L̄ = E[W]`` and ``E[W²]``.

    ``P(W >= 1/2) <= Var(1-2W) / E[(1-2W)²]`` when ``E[1-2W] > 0``, i.e.
    ``(E[W²] - L̄²) / (E[W²] - L̄ + 1/4)``; 1 (vacuous) when ``L̄ >= 1/2``. Binary: ``1 - (1-2L̄)² / (1-2D)``.
    """
    if mean_member_error >= 0.5:
        return 1.0
    denominator = second_moment - mean_member_error + 0.25
    return max(0.0, (second_moment - mean_member_error**2) / denominator)


def competence_bound(num_classes: int, mean_member_error: float, disagreement: float) -> float:
    """Theisen et al. (2023) bound for competent ensembles: ``4 (K-1)/K · (L̄ - D/2)`` (self-pair-inclusive D)."""
    return 4.0 * (num_classes - 1) / num_classes * (mean_member_error - disagreement / 2.0)


def is_competent(w_distribution: Tensor) -> bool:
    """Competence (Theisen et al. 2023): ``P(W ∈ [t, 1/2)) >= P(W ∈ [1/2, 1 - t])`` for every ``t ∈ [0, 1/2]``.

    ``w_distribution`` is ``[M + 1]``: the probability of ``W = k / M``. Both sides are step functions of t that
    change only where t or 1 - t crosses a level ``k / M``, so checking those points and the midpoints between them
    decides the condition exactly (levels are compared in integers: ``2k < M`` means ``k / M < 1/2``).
    """
    m = w_distribution.shape[0] - 1
    p = w_distribution.double().cpu()
    levels = torch.arange(m + 1, dtype=torch.float64) / m
    breaks = sorted({0.0, 0.5} | {float(x) for x in levels if x <= 0.5} | {1.0 - float(x) for x in levels if x >= 0.5})
    candidates = set(breaks) | {(a + b) / 2 for a, b in zip(breaks, breaks[1:])}
    k = torch.arange(m + 1)
    below = 2 * k < m
    for t in sorted(candidates):
        left = p[below & (levels >= t - 1e-12)].sum()
        right = p[(~below) & (levels <= 1.0 - t + 1e-12)].sum()
        if left < right - 1e-12:
            return False
    return True


def predict_majority_vote_error(
    num_members: int | float,
    *,
    mean_member_error: float,
    disagreement_pairs: float,
    both_wrong_disagreement_pairs: float,
    eta: float = POLARIZATION_LAW_ETA,
) -> float:
    """Predicted majority-vote error of an ensemble of ``num_members`` members (``math.inf`` allowed).

    ``η · [L̄ + (1 - 1/M) (T_pairs - D_pairs) / 2]``: ``E[W²]`` of M i.i.d. members from the distinct-pair averages
    of a few members, times the polarization (the law's 4/3 by default).
    """
    if not (isinstance(num_members, (int, float)) and num_members >= 1):
        raise ValueError(f"num_members must be >= 1 (or math.inf), got {num_members!r}")
    if not math.isfinite(eta) or eta <= 0:
        raise ValueError(f"eta must be a positive finite number, got {eta!r}")
    shrink = 1.0 - 1.0 / num_members
    return eta * (mean_member_error + shrink * (both_wrong_disagreement_pairs - disagreement_pairs) / 2.0)


@dataclass(frozen=True)
class EnsembleStatistics:
    """Everything the polarization analysis reports for one ensemble on one set of points (Python floats).

    Attributes:
        num_members: M. num_classes: K. num_points: N.
        member_error: per-member error rates, length M.
        mean_member_error: L̄ = E[W].
        w_distribution: P(W = k / M) for k = 0..M.
        w_second_moment: E[W²].
        p_w_above_half: P(W > 1/2).
        polarization: η = P(W > 1/2) / E[W²] (NaN if E[W²] = 0).
        disagreement: D, all M² ordered pairs (self-pairs included).
        disagreement_pairs: D over the M(M-1) distinct pairs.
        both_wrong_disagreement: T, self-pairs included. both_wrong_disagreement_pairs: T over distinct pairs.
        majority_vote_error: L_MV under ``tie_rule``. majority_vote_ties: fraction of points with a tied top vote.
        tie_rule: the tie rule of the majority vote.
    """

    num_members: int
    num_classes: int
    num_points: int
    member_error: tuple[float, ...]
    mean_member_error: float
    w_distribution: tuple[float, ...]
    w_second_moment: float
    p_w_above_half: float
    polarization: float
    disagreement: float
    disagreement_pairs: float
    both_wrong_disagreement: float
    both_wrong_disagreement_pairs: float
    majority_vote_error: float
    majority_vote_ties: float
    tie_rule: str

    @property
    def identity_residual(self) -> float:
        """``E[W²] - (L̄ - D/2 + T/2)``: zero up to float rounding."""
        return self.w_second_moment - polarization_bound(1.0, self.mean_member_error, self.disagreement,
                                                         self.both_wrong_disagreement)

    def bound(self, eta: float = POLARIZATION_LAW_ETA) -> float:
        """``η · (L̄ - D/2 + T/2)``; with the measured η it equals ``P(W > 1/2)``."""
        return polarization_bound(eta, self.mean_member_error, self.disagreement, self.both_wrong_disagreement)

    @property
    def c_bound(self) -> float:
        return c_bound(self.mean_member_error, self.w_second_moment)

    @property
    def competence_bound(self) -> float:
        return competence_bound(self.num_classes, self.mean_member_error, self.disagreement)

    @property
    def competent(self) -> bool:
        return is_competent(torch.tensor(self.w_distribution, dtype=torch.float64))

    def predict_majority_vote_error(self, num_members: int | float, eta: float | str = "law") -> float:
        """Predicted L_MV for ``num_members`` members; ``eta``: ``"law"`` (4/3), ``"measured"`` or a number."""
        if eta == "law":
            value = POLARIZATION_LAW_ETA
        elif eta == "measured":
            value = self.polarization
        elif isinstance(eta, (int, float)) and not isinstance(eta, bool):
            value = float(eta)
        else:
            raise ValueError(f"eta must be 'law', 'measured' or a positive number, got {eta!r}")
        if math.isnan(value):
            return math.nan
        return predict_majority_vote_error(
            num_members,
            mean_member_error=self.mean_member_error,
            disagreement_pairs=self.disagreement_pairs,
            both_wrong_disagreement_pairs=self.both_wrong_disagreement_pairs,
            eta=value,
        )

    def as_dict(self) -> dict[str, float]:
        """Scalar summary (for logging): the statistics, the bounds and the law-based M -> infinity prediction."""
        return {
            "mean_member_error": self.mean_member_error,
            "w_mean": self.mean_member_error,
            "w_second_moment": self.w_second_moment,
            "p_w_above_half": self.p_w_above_half,
            "polarization": self.polarization,
            "disagreement": self.disagreement,
            "disagreement_pairs": self.disagreement_pairs,
            "both_wrong_disagreement": self.both_wrong_disagreement,
            "both_wrong_disagreement_pairs": self.both_wrong_disagreement_pairs,
            "majority_vote_error": self.majority_vote_error,
            "majority_vote_ties": self.majority_vote_ties,
            "bound_law": self.bound(POLARIZATION_LAW_ETA),
            "c_bound": self.c_bound,
            "competence_bound": self.competence_bound,
            "predicted_majority_vote_error_infinite": self.predict_majority_vote_error(math.inf),
        }


def ensemble_statistics(counts: EnsembleVoteCounts, *, num_classes: int, tie_rule: str = "lowest_class",
                        warn_undefined: bool = True) -> EnsembleStatistics:
    """Turn additive :class:`EnsembleVoteCounts` into :class:`EnsembleStatistics` (float64 arithmetic)."""
    m = counts.num_members
    n = int(counts.num_points)
    if n == 0:
        raise ValueError("no points were seen: the ensemble statistics need at least one labelled point")
    hist = counts.wrong_count_histogram.double().cpu()
    w_distribution = hist / n
    levels = torch.arange(m + 1, dtype=torch.float64) / m
    second = float((levels.square() * w_distribution).sum())
    above = float(w_distribution[2 * torch.arange(m + 1) > m].sum())
    member_error = counts.member_errors.double().cpu() / n
    dis = float(counts.pair_disagreements.double().sum())
    wdis = float(counts.pair_wrong_disagreements.double().sum())
    if warn_undefined:
        eta = polarization_from_w(above, second)
    else:
        eta = above / second if second > 0 else math.nan
    return EnsembleStatistics(
        num_members=m,
        num_classes=num_classes,
        num_points=n,
        member_error=tuple(member_error.tolist()),
        mean_member_error=float(member_error.mean()),
        w_distribution=tuple(w_distribution.tolist()),
        w_second_moment=second,
        p_w_above_half=above,
        polarization=eta,
        disagreement=dis / (m * m * n),
        disagreement_pairs=dis / (m * (m - 1) * n),
        both_wrong_disagreement=wdis / (m * m * n),
        both_wrong_disagreement_pairs=wdis / (m * (m - 1) * n),
        majority_vote_error=float(counts.majority_vote_errors) / n,
        majority_vote_ties=float(counts.majority_vote_ties) / n,
        tie_rule=tie_rule,
    )
