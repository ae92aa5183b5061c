"""Ensemble polarization metrics against a numpy brute force, the exact identity, the note's golden example, DDP."""

from __future__ import annotations

import functools
import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from torchmetrics import MetricCollection

from framework.metrics.ensemble_bounds import (
    POLARIZATION_LAW_ETA,
    PolarizationUndefinedWarning,
    c_bound,
    is_competent,
    predict_majority_vote_error,
)
from framework.metrics.ensemble_polarization import (
    BothWrongDisagreement,
    CBound,
    CompetenceBound,
    EnsembleDisagreement,
    EnsemblePolarization,
    MajorityVoteError,
    PointwiseErrorDistribution,
    Polarization,
    PolarizationBound,
    PredictedMajorityVoteError,
    ensemble_polarization_statistics,
)
from framework.metrics.ensemble_votes import (
    ensemble_vote_counts,
    majority_vote,
    majority_vote_errors,
    pointwise_error_rate,
)


def brute_force(P: np.ndarray, y: np.ndarray, K: int, tie_rule: str = "lowest_class") -> dict:
    """Loops over points and pairs, straight from the definitions."""
    M, N = P.shape
    W = np.array([sum(P[m, n] != y[n] for m in range(M)) / M for n in range(N)])
    L = np.array([np.mean(P[m] != y) for m in range(M)])
    dis = np.zeros((M, M))
    tee = np.zeros((M, M))
    for i, j in itertools.product(range(M), range(M)):
        dis[i, j] = np.mean(P[i] != P[j])
        tee[i, j] = np.mean((P[i] != P[j]) & (P[i] != y) & (P[j] != y))
    mv = []
    for n in range(N):
        votes = np.bincount(P[:, n], minlength=K)
        tops = np.flatnonzero(votes == votes.max())
        if tie_rule == "lowest_class":
            mv.append(float(tops[0] != y[n]))
        elif tie_rule == "pessimistic":
            mv.append(float(not (len(tops) == 1 and tops[0] == y[n])))
        else:
            mv.append(1.0 - float(y[n] in tops) / len(tops))
    e2 = np.mean(W**2)
    above = np.mean(W > 0.5)
    return {
        "W": W,
        "mean_member_error": L.mean(),
        "w_second_moment": e2,
        "p_w_above_half": above,
        "polarization": above / e2 if e2 > 0 else math.nan,
        "disagreement": dis.sum() / M**2,
        "disagreement_pairs": dis.sum() / (M * (M - 1)),
        "both_wrong_disagreement": tee.sum() / M**2,
        "both_wrong_disagreement_pairs": tee.sum() / (M * (M - 1)),
        "majority_vote_error": np.mean(mv),
    }


def random_ensemble(seed: int, M: int, N: int, K: int, accuracy: float = 0.6):
    """Members right with probability ``accuracy``, otherwise a random class (correlated through a shared 'hard' mask)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, N)
    hard = rng.random(N) < 0.3
    P = np.where(rng.random((M, N)) < np.where(hard, accuracy / 2, accuracy), y, rng.integers(0, K, (M, N)))
    return torch.as_tensor(P), torch.as_tensor(y)


@pytest.mark.parametrize("tie_rule", ["lowest_class", "pessimistic", "expected_random"])
@pytest.mark.parametrize("M,N,K,seed", [(2, 50, 2, 0), (3, 97, 3, 1), (5, 200, 10, 2), (8, 64, 4, 3), (6, 120, 2, 4)])
def test_statistics_match_brute_force(M, N, K, seed, tie_rule):
    P, y = random_ensemble(seed, M, N, K)
    ref = brute_force(P.numpy(), y.numpy(), K, tie_rule)
    stats = ensemble_polarization_statistics(P, y, num_classes=K, tie_rule=tie_rule)
    for key, value in ref.items():
        if key == "W":
            continue
        assert getattr(stats, key) == pytest.approx(value, rel=1e-12, abs=1e-12), key
    np.testing.assert_allclose(pointwise_error_rate(P, y).numpy(), ref["W"])
    hist = np.bincount(np.rint(ref["W"] * M).astype(int), minlength=M + 1) / N
    np.testing.assert_allclose(stats.w_distribution, hist)
    assert stats.bound(1.5) == pytest.approx(1.5 * ref["w_second_moment"], abs=1e-12)


@pytest.mark.parametrize("M,K,seed", [(3, 10, 0), (7, 5, 1), (25, 10, 2), (4, 2, 3)])
def test_error_identity_is_exact(M, K, seed):
    P, y = random_ensemble(seed, M, 501, K)
    stats = ensemble_polarization_statistics(P, y, num_classes=K)
    assert abs(stats.identity_residual) < 1e-14
    # ... and exactly, in integers: 2 M^2 N E[W^2] = 2 M sum(errors) - sum(dis) + sum(wrong & dis).
    c = ensemble_vote_counts(P, y, num_classes=K)
    levels = torch.arange(M + 1)
    lhs = 2 * int((levels**2 * c.wrong_count_histogram).sum())
    rhs = 2 * M * int(c.member_errors.sum()) - int(c.pair_disagreements.sum()) + int(c.pair_wrong_disagreements.sum())
    assert lhs == rhs
    if K == 2:
        assert stats.both_wrong_disagreement == 0.0


def test_golden_binary_example_from_the_note():
    P = torch.tensor([[1, 0, 0, 1], [1, 1, 0, 0], [0, 1, 0, 0]])
    y = torch.zeros(4, dtype=torch.long)
    s = ensemble_polarization_statistics(P, y, num_classes=2)
    np.testing.assert_allclose(pointwise_error_rate(P, y).numpy(), [2 / 3, 2 / 3, 0, 1 / 3])
    assert s.w_second_moment == pytest.approx(0.25)
    assert s.p_w_above_half == pytest.approx(0.5)
    assert s.polarization == pytest.approx(2.0)
    assert s.mean_member_error == pytest.approx(5 / 12)
    assert s.disagreement_pairs == pytest.approx(0.5)
    assert s.disagreement == pytest.approx(1 / 3)
    assert s.both_wrong_disagreement == 0.0
    assert s.majority_vote_error == pytest.approx(0.5)
    assert s.bound(s.polarization) == pytest.approx(0.5)
    assert s.bound(POLARIZATION_LAW_ETA) == pytest.approx(1 / 3)
    # C-bound, binary form 1 - (1 - 2 L)^2 / (1 - 2 D).
    assert s.c_bound == pytest.approx(1 - (1 - 2 * 5 / 12) ** 2 / (1 - 2 / 3))
    assert s.competence_bound == pytest.approx(2 * (5 / 12 - 1 / 6))
    assert not s.competent  # P(W in [1/3, 1/2)) = 0.25 < P(W in [1/2, 2/3]) = 0.5


def test_c_bound_binary_form_matches_general_form():
    P, y = random_ensemble(7, 9, 300, 2)
    s = ensemble_polarization_statistics(P, y, num_classes=2)
    assert s.c_bound == pytest.approx(1 - (1 - 2 * s.mean_member_error) ** 2 / (1 - 2 * s.disagreement), rel=1e-12)
    assert c_bound(0.6, 0.5) == 1.0


def test_competence_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        M = int(rng.integers(2, 8))
        p = rng.dirichlet(np.ones(M + 1) * 0.5)
        levels = np.arange(M + 1) / M
        ts = np.linspace(0, 0.5, 2001)
        ok = all(p[(levels >= t) & (levels < 0.5)].sum() >= p[(levels >= 0.5) & (levels <= 1 - t)].sum() - 1e-12
                 for t in ts)
        assert is_competent(torch.tensor(p)) == ok


def test_majority_vote_and_tie_rules():
    # Point 0: votes 0,1 (tie, label 1); point 1: votes 2,2 (label 2); point 2: 0,1 (tie, label 0).
    P = torch.tensor([[0, 2, 0], [1, 2, 1]])
    y = torch.tensor([1, 2, 0])
    assert majority_vote(P, 3).tolist() == [0, 2, 0]
    assert majority_vote_errors(P, y, 3, "lowest_class").tolist() == [1.0, 0.0, 0.0]
    assert majority_vote_errors(P, y, 3, "pessimistic").tolist() == [1.0, 0.0, 1.0]
    assert majority_vote_errors(P, y, 3, "expected_random").tolist() == [0.5, 0.0, 0.5]
    assert ensemble_polarization_statistics(P, y, num_classes=3).majority_vote_ties == pytest.approx(2 / 3)


def test_logits_equal_argmax_class_ids():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 40, 4, generator=g)
    y = torch.randint(0, 4, (40,), generator=g)
    assert ensemble_polarization_statistics(logits, y) == ensemble_polarization_statistics(
        logits.argmax(-1), y, num_classes=4
    )


def test_error_free_ensemble_polarization_is_nan_with_warning():
    y = torch.tensor([0, 1, 2, 1])
    P = y.expand(3, 4)
    with pytest.warns(PolarizationUndefinedWarning, match="undefined"):
        s = ensemble_polarization_statistics(P, y, num_classes=3)
    assert math.isnan(s.polarization)
    assert s.w_second_moment == 0.0 and s.majority_vote_error == 0.0
    assert math.isnan(s.predict_majority_vote_error(10, "measured"))


@pytest.mark.parametrize(
    "preds,target,kwargs,match",
    [
        (torch.zeros(1, 4, dtype=torch.long), torch.zeros(4, dtype=torch.long), {"num_classes": 2}, "at least 2 members, got M=1"),
        (torch.zeros(3, 4, dtype=torch.long), torch.zeros(5, dtype=torch.long), {"num_classes": 2}, "N=4 .* 5 labels"),
        (torch.zeros(3, 4, dtype=torch.long), torch.tensor([0, 1, 7, 0]), {"num_classes": 3}, "label 7 outside \\[0, 3\\)"),
        (torch.zeros(3, 4, dtype=torch.long), torch.tensor([0, -1, 0, 0]), {"num_classes": 3}, "label -1 outside"),
        (torch.randn(3, 4, 5), torch.tensor([0, 1, 5, 0]), {}, "label 5 outside \\[0, 5\\)"),
        (torch.full((3, 4), 4), torch.zeros(4, dtype=torch.long), {"num_classes": 3}, "class id 4 outside"),
        (torch.zeros(3, 4), torch.zeros(4, dtype=torch.long), {"num_classes": 3}, "integer class ids"),
        (torch.zeros(3, 4, dtype=torch.long), torch.zeros(4, dtype=torch.long), {}, "num_classes is required"),
        (torch.randn(3, 4, 5), torch.zeros(4, dtype=torch.long), {"num_classes": 3}, "K=5"),
        (torch.zeros(3, 4, dtype=torch.long), torch.zeros(4), {"num_classes": 3}, "integer class labels"),
        (torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), {"num_classes": 3}, "shape \\[4\\]"),
        (torch.full((3, 4, 2), float("nan")), torch.zeros(4, dtype=torch.long), {}, "NaN"),
    ],
)
def test_bad_input_raises_value_error_naming_the_value(preds, target, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ensemble_polarization_statistics(preds, target, **kwargs)


def test_metric_constructor_and_update_validation():
    with pytest.raises(ValueError, match="num_members must be an integer >= 2, got 1"):
        EnsemblePolarization(num_members=1, num_classes=3)
    with pytest.raises(ValueError, match="tie_rule"):
        EnsemblePolarization(num_members=3, num_classes=3, tie_rule="coin")
    with pytest.raises(ValueError, match="pairs"):
        EnsembleDisagreement(num_members=3, num_classes=3, pairs="some")
    with pytest.raises(ValueError, match="eta"):
        PolarizationBound(num_members=3, num_classes=3, eta=-1.0)
    with pytest.raises(ValueError, match="target_members"):
        PredictedMajorityVoteError(num_members=3, num_classes=3, target_members=0)
    metric = EnsemblePolarization(num_members=3, num_classes=3)
    with pytest.raises(ValueError, match="num_members=3 but preds has M=4"):
        metric.update(torch.zeros(4, 2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="num_members"):
        predict_majority_vote_error(0, mean_member_error=0.1, disagreement_pairs=0.1, both_wrong_disagreement_pairs=0)


def _batches(seed=0, M=5, K=4, sizes=(17, 30, 8, 25)):
    P, y = random_ensemble(seed, M, sum(sizes), K)
    out, start = [], 0
    for s in sizes:
        out.append((P[:, start : start + s], y[start : start + s]))
        start += s
    return out, P, y


def test_batched_metric_classes_equal_one_shot_statistics():
    batches, P, y = _batches()
    ref = ensemble_polarization_statistics(P, y, num_classes=4)
    kw = {"num_members": 5, "num_classes": 4}
    collection = MetricCollection(
        {
            "w": PointwiseErrorDistribution(**kw),
            "d": EnsembleDisagreement(**kw),
            "d_pairs": EnsembleDisagreement(pairs="distinct", **kw),
            "t": BothWrongDisagreement(**kw),
            "t_pairs": BothWrongDisagreement(pairs="distinct", **kw),
            "eta": Polarization(**kw),
            "mv": MajorityVoteError(**kw),
            "bound": PolarizationBound(**kw),
            "bound_measured": PolarizationBound(eta="measured", **kw),
            "c": CBound(**kw),
            "comp": CompetenceBound(**kw),
            "pred10": PredictedMajorityVoteError(target_members=10, **kw),
            "pred10_measured": PredictedMajorityVoteError(target_members=10, eta="measured", **kw),
        }
    )
    full = EnsemblePolarization(**kw)
    for preds, target in batches:
        collection.update(preds, target)
        full.update(preds, target)
    got = collection.compute()
    np.testing.assert_allclose(got["w"].numpy(), ref.w_distribution)
    expected = {
        "d": ref.disagreement, "d_pairs": ref.disagreement_pairs, "t": ref.both_wrong_disagreement,
        "t_pairs": ref.both_wrong_disagreement_pairs, "eta": ref.polarization, "mv": ref.majority_vote_error,
        "bound": ref.bound(4 / 3), "bound_measured": ref.p_w_above_half, "c": ref.c_bound,
        "comp": ref.competence_bound, "pred10": ref.predict_majority_vote_error(10),
        "pred10_measured": ref.predict_majority_vote_error(10, "measured"),
    }
    for key, value in expected.items():
        assert float(got[key]) == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert full.compute_statistics() == ref
    assert float(full.compute()["polarization"]) == pytest.approx(ref.polarization)


def test_predictor_scaling_matches_subset_average():
    """E[D(rho_M)] over random size-M subsets equals (1 - 1/M) D_pairs of the population (note §1.6)."""
    P, y = random_ensemble(3, 8, 300, 5)
    pop = ensemble_polarization_statistics(P, y, num_classes=5)
    for M in (2, 3, 5):
        subsets = list(itertools.combinations(range(8), M))
        ds = [ensemble_polarization_statistics(P[list(s)], y, num_classes=5).disagreement for s in subsets]
        ews = [ensemble_polarization_statistics(P[list(s)], y, num_classes=5).w_second_moment for s in subsets]
        assert np.mean(ds) == pytest.approx((1 - 1 / M) * pop.disagreement_pairs, rel=1e-10)
        # The predictor with eta = 1 is exactly the subset average of E[W^2].
        assert np.mean(ews) == pytest.approx(pop.predict_majority_vote_error(M, 1.0), rel=1e-10)


@pytest.mark.ddp
def test_ddp_matches_single_process():
    from tests.helpers.metric_ddp import assert_ddp_matches_single_process

    batches, _, _ = _batches(seed=5, sizes=(13, 7, 20, 11, 9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_ddp_matches_single_process(
            functools.partial(EnsemblePolarization, num_members=5, num_classes=4, tie_rule="expected_random"),
            batches, atol=0, rtol=0,
        )
