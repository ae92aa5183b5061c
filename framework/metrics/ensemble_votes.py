"""Ensemble votes: input checks, the majority vote with a stated tie rule, and the additive vote counts.

Everything the ensemble-polarization statistics need is a *sum over points* of a few integer counts
(:class:`EnsembleVoteCounts`), so batches, epochs and DDP ranks combine by plain addition — exactly.

Shapes: ``M`` members, ``N`` points, ``K`` classes. Member predictions are class ids ``[M, N]`` (integer dtype) or
logits / probabilities ``[M, N, K]`` (floating dtype, reduced by ``argmax`` over the last dim); labels ``[N]``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

__all__ = [
    "TIE_RULES",
    "EnsembleVoteCounts",
    "as_member_predictions",
    "ensemble_vote_counts",
    "majority_vote",
    "majority_vote_errors",
    "pointwise_error_rate",
    "vote_histogram",
]

#: How the majority vote treats a tie between the largest vote counts at a point.
#: ``"lowest_class"``: the tied class with the lowest index wins (what ``torch.argmax`` returns; deterministic).
#: ``"pessimistic"``: a tie is an error whenever the true class is not the *unique* winner.
#: ``"expected_random"``: a uniformly random tied class wins; the error at a tied point is its expectation
#: ``1 - [true class tied for the top] / (number of tied classes)`` (a fraction).
TIE_RULES = ("lowest_class", "pessimistic", "expected_random")

# Pairwise counts are computed on chunks of points so the [M, M, chunk] boolean tensor stays under ~16 M elements.
_PAIR_CHUNK_ELEMENTS = 1 << 24


def as_member_predictions(
    preds: Tensor, target: Tensor, *, num_classes: int | None = None
) -> tuple[Tensor, Tensor, int]:
    """Check an ensemble's outputs and labels; return class-id predictions, labels and the number of classes.

    Args:
        preds: ``[M, N]`` integer class ids, or ``[M, N, K]`` floating logits / probabilities.
        target: ``[N]`` integer labels in ``[0, K)``.
        num_classes: ``K``; required with class ids, checked against the last dim of logits.

    Returns:
        ``(predictions [M, N] int64, target [N] int64, K)``.

    Raises:
        ValueError: fewer than 2 members, lengths that differ, labels or class ids outside ``[0, K)``,
            non-finite logits, wrong dtypes or ranks. The message names the offending value.
    """
    if not isinstance(preds, Tensor) or not isinstance(target, Tensor):
        raise ValueError(
            f"preds and target must be torch tensors, got {type(preds).__name__} and {type(target).__name__}"
        )
    if preds.dim() not in (2, 3):
        raise ValueError(
            "preds must be member class ids [M, N] or member logits [M, N, K], "
            f"got a tensor of shape {list(preds.shape)}"
        )
    if preds.shape[0] < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got M={preds.shape[0]} (preds shape {list(preds.shape)})")
    if target.dim() != 1:
        raise ValueError(f"target must be labels of shape [N], got shape {list(target.shape)}")
    if target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
        raise ValueError(f"target must hold integer class labels, got dtype {target.dtype}")
    if preds.shape[1] != target.shape[0]:
        raise ValueError(
            f"preds has N={preds.shape[1]} points per member but target has {target.shape[0]} labels; they must match"
        )
    if preds.dim() == 3:
        if not preds.is_floating_point():
            raise ValueError(f"member logits [M, N, K] must be floating point, got dtype {preds.dtype}")
        k = preds.shape[2]
        if num_classes is not None and k != num_classes:
            raise ValueError(f"member logits have K={k} classes in their last dim but num_classes={num_classes}")
        if k < 2:
            raise ValueError(f"classification needs at least 2 classes, got logits with K={k}")
        if preds.numel() and not torch.isfinite(preds).all():
            raise ValueError("member logits contain NaN or infinite values")
        num_classes = k
        predictions = preds.argmax(dim=-1)
    else:
        if preds.is_floating_point() or preds.dtype == torch.bool or preds.is_complex():
            raise ValueError(
                f"member predictions of shape [M, N] must be integer class ids, got dtype {preds.dtype}; "
                "pass logits as [M, N, K] instead"
            )
        if num_classes is None:
            raise ValueError("num_classes is required when preds are class ids [M, N]")
        predictions = preds.long()
        if predictions.numel():
            low, high = int(predictions.min()), int(predictions.max())
            bad = low if low < 0 else high if high >= num_classes else None
            if bad is not None:
                raise ValueError(f"preds contain class id {bad} outside [0, {num_classes}) (num_classes={num_classes})")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    labels = target.long()
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        bad = low if low < 0 else high if high >= num_classes else None
        if bad is not None:
            raise ValueError(f"target contains label {bad} outside [0, {num_classes}) (num_classes={num_classes})")
    return predictions, labels.to(predictions.device), num_classes


def vote_histogram(predictions: Tensor, num_classes: int) -> Tensor:
    """Votes per class at every point: ``[M, N]`` class ids -> ``[N, K]`` counts (int64)."""
    m, n = predictions.shape
    counts = torch.zeros(n, num_classes, dtype=torch.long, device=predictions.device)
    counts.scatter_add_(1, predictions.t(), torch.ones(n, m, dtype=torch.long, device=predictions.device))
    return counts


def majority_vote(predictions: Tensor, num_classes: int) -> Tensor:
    """Majority (plurality) vote ``[M, N] -> [N]``; ties go to the lowest class index (``torch.argmax``)."""
    return vote_histogram(predictions, num_classes).argmax(dim=1)


def majority_vote_errors(predictions: Tensor, target: Tensor, num_classes: int, tie_rule: str = "lowest_class") -> Tensor:
    """Per-point majority-vote error ``[N]`` (float64) under ``tie_rule`` (see :data:`TIE_RULES`)."""
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie_rule must be one of {list(TIE_RULES)}, got {tie_rule!r}")
    votes = vote_histogram(predictions, num_classes)
    if tie_rule == "lowest_class":
        return (votes.argmax(dim=1) != target).double()
    top = votes.max(dim=1).values
    tied = votes == top.unsqueeze(1)  # [N, K]
    num_tied = tied.sum(dim=1)
    true_is_top = tied.gather(1, target.unsqueeze(1)).squeeze(1)
    if tie_rule == "pessimistic":
        return (~(true_is_top & (num_tied == 1))).double()
    return 1.0 - true_is_top.double() / num_tied.double()


def pointwise_error_rate(predictions: Tensor, target: Tensor) -> Tensor:
    """W at every point: the fraction of members that are wrong, ``[M, N] x [N] -> [N]`` (float)."""
    return (predictions != target.unsqueeze(0)).double().mean(dim=0)


@dataclass(frozen=True)
class EnsembleVoteCounts:
    """Additive sufficient statistics of an ensemble's votes on a set of points (all sums over points).

    Attributes:
        num_points: ``[]`` number of points N.
        member_errors: ``[M]`` points each member gets wrong.
        wrong_count_histogram: ``[M + 1]`` points at which exactly ``k`` members are wrong (W = k / M).
        pair_disagreements: ``[M, M]`` points at which members i and j predict different classes (0 on the diagonal).
        pair_wrong_disagreements: ``[M, M]`` points at which i and j are both wrong *and* disagree (T's counts).
        majority_vote_errors: ``[]`` majority-vote errors under the tie rule (float64: a fraction per tied point
            with ``"expected_random"``).
        majority_vote_ties: ``[]`` points at which the largest vote count is shared by several classes.
    """

    num_points: Tensor
    member_errors: Tensor
    wrong_count_histogram: Tensor
    pair_disagreements: Tensor
    pair_wrong_disagreements: Tensor
    majority_vote_errors: Tensor
    majority_vote_ties: Tensor

    @property
    def num_members(self) -> int:
        return int(self.member_errors.shape[0])

    def __add__(self, other: EnsembleVoteCounts) -> EnsembleVoteCounts:
        if self.num_members != other.num_members:
            raise ValueError(f"cannot add vote counts of {self.num_members} and {other.num_members} members")
        return EnsembleVoteCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


def _pair_counts(predictions: Tensor, wrong: Tensor) -> tuple[Tensor, Tensor]:
    m, n = predictions.shape
    disagree = torch.zeros(m, m, dtype=torch.long, device=predictions.device)
    wrong_disagree = torch.zeros_like(disagree)
    chunk = max(1, _PAIR_CHUNK_ELEMENTS // max(1, m * m))
    for start in range(0, n, chunk):
        p = predictions[:, start : start + chunk]
        e = wrong[:, start : start + chunk]
        differ = p.unsqueeze(1) != p.unsqueeze(0)  # [M, M, n]
        disagree += differ.sum(dim=2)
        wrong_disagree += (differ & e.unsqueeze(1) & e.unsqueeze(0)).sum(dim=2)
    return disagree, wrong_disagree


def ensemble_vote_counts(
    preds: Tensor, target: Tensor, *, num_classes: int | None = None, tie_rule: str = "lowest_class"
) -> EnsembleVoteCounts:
    """The additive counts of one batch of points.

    Args:
        preds: ``[M, N]`` class ids or ``[M, N, K]`` logits.
        target: ``[N]`` labels.
        num_classes: ``K`` (required with class ids).
        tie_rule: one of :data:`TIE_RULES`.
    """
    predictions, labels, k = as_member_predictions(preds, target, num_classes=num_classes)
    m, n = predictions.shape
    wrong = predictions != labels.unsqueeze(0)  # [M, N]
    wrong_per_point = wrong.sum(dim=0)
    histogram = torch.bincount(wrong_per_point, minlength=m + 1)
    disagree, wrong_disagree = _pair_counts(predictions, wrong)
    votes = vote_histogram(predictions, k)
    top = votes.max(dim=1).values
    ties = ((votes == top.unsqueeze(1)).sum(dim=1) > 1).sum()
    return EnsembleVoteCounts(
        num_points=torch.tensor(n, dtype=torch.long, device=predictions.device),
        member_errors=wrong.sum(dim=1),
        wrong_count_histogram=histogram,
        pair_disagreements=disagree,
        pair_wrong_disagreements=wrong_disagree,
        majority_vote_errors=majority_vote_errors(predictions, labels, k, tie_rule).sum(),
        majority_vote_ties=ties,
    )
