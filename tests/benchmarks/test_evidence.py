"""Intervals and the selection protocol of benchmarks/evidence.py against hand-computed and closed-form values."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy import stats

from benchmarks.evidence import (
    Interval,
    SelectionProtocol,
    format_mean_se,
    mean_se,
    paired_bootstrap,
    require_disjoint,
    seed_difference,
    spearman_interval,
    verdict,
)


def test_mean_se_hand_computed():
    # values 1, 2, 3, 6: mean 3, sample variance (4 + 1 + 0 + 9) / 3 = 14/3, SE = sqrt(14/3) / 2.
    summary = mean_se([1.0, 2.0, 3.0, 6.0])
    assert summary.mean == pytest.approx(3.0)
    assert summary.se == pytest.approx(np.sqrt(14 / 3) / 2)
    assert summary.n == 4
    assert np.isnan(mean_se([5.0]).se)
    assert "no error bar" in format_mean_se(mean_se([5.0]))


def test_seed_difference_is_the_paired_t_interval():
    a, b = [0.9, 0.8, 0.85], [0.7, 0.65, 0.66]
    interval = seed_difference(a, b)
    d = np.subtract(a, b)  # 0.2, 0.15, 0.19
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert interval.estimate == pytest.approx(d.mean())
    assert (interval.low, interval.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert verdict(interval, higher_is_better=True, names=("A", "B")) == "A better"


def test_paired_bootstrap_matches_the_exact_bootstrap_distribution():
    # Three paired differences 0, 1, 5: the exact bootstrap distribution of the mean has 27 equally likely
    # resamples; its 2.5 % / 97.5 % quantiles are the interval a large Monte Carlo bootstrap must approach.
    a, b = np.array([1.0, 3.0, 9.0]), np.array([1.0, 2.0, 4.0])
    diffs = a - b
    means = np.sort([np.mean(diffs[list(idx)]) for idx in itertools.product(range(3), repeat=3)])
    exact_low, exact_high = np.quantile(means, [0.025, 0.975], method="inverted_cdf")
    interval = paired_bootstrap(a, b, n_resamples=50_000, seed=1)
    assert interval.estimate == pytest.approx(2.0)
    # The extremes 0 and 5 each carry 1/27 > 2.5 % of the exact distribution, so the interval is exactly [0, 5].
    assert (exact_low, exact_high) == (0.0, 5.0)
    assert (interval.low, interval.high) == pytest.approx((exact_low, exact_high))


def test_paired_bootstrap_agrees_with_scipy_and_normal_theory():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 1.0, 400)
    b = a - 0.3 + rng.normal(0.0, 0.5, 400)
    interval = paired_bootstrap(a, b, seed=3)
    ref = stats.bootstrap((a - b,), np.mean, confidence_level=0.95, method="percentile",
                          rng=np.random.default_rng(5)).confidence_interval
    assert interval.low == pytest.approx(ref.low, abs=0.01)
    assert interval.high == pytest.approx(ref.high, abs=0.01)
    se = (a - b).std(ddof=1) / np.sqrt(400)
    assert interval.high - interval.low == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert verdict(interval, higher_is_better=True) == "a better"
    assert verdict(interval, higher_is_better=False) == "b better"


def test_paired_bootstrap_keeps_the_pairing():
    # Huge between-item spread, constant paired shift: unpaired resampling would give a wide interval.
    base = np.linspace(0, 1000, 50)
    interval = paired_bootstrap(base + 1.0 + np.tile([0.01, -0.01], 25), base, seed=0)
    assert 0.99 < interval.low < interval.high < 1.01
    constant = paired_bootstrap(base + 2.0, base)
    assert (constant.low, constant.high) == (2.0, 2.0)


def test_tie_when_interval_includes_zero():
    interval = Interval(0.1, -0.2, 0.4, 0.95, 5, "x")
    assert verdict(interval, higher_is_better=True) == "tie (interval includes 0)"


def test_spearman_interval_contains_the_point_estimate():
    x = np.repeat([1, 5, 10, 20, 30, 40], 5).astype(float)
    y = x + np.random.default_rng(0).normal(0, 15, x.size)
    interval = spearman_interval(x, y, n_resamples=2000)
    assert interval.estimate == pytest.approx(stats.spearmanr(x, y).statistic)
    assert -1 <= interval.low <= interval.estimate <= interval.high <= 1


@pytest.mark.parametrize("bad", [[1.0], [1.0, float("nan")], [[1.0, 2.0]]])
def test_bad_values_raise(bad):
    with pytest.raises(ValueError, match="a"):
        paired_bootstrap(bad, bad)


def test_require_disjoint():
    require_disjoint([1, 2], [3, 4])
    with pytest.raises(ValueError, match="overlap in 1"):
        require_disjoint([1, 2], [2, 3], what="prompts")


def test_selection_protocol_chooses_on_validation_and_reports_once():
    validation = {0.05: 0.3, 0.5: 0.8, 0.75: 0.9}
    protocol = SelectionProtocol(validation_split="val prompts", test_split="test prompts")
    seen = []

    def score(alpha):
        seen.append(alpha)
        return validation[alpha]

    chosen = protocol.select("alpha", [0.05, 0.5, 0.75], score, criterion="validation score", higher_is_better=True,
                             paper_value=0.05)
    assert chosen == 0.75 and seen == [0.05, 0.5, 0.75]
    with pytest.raises(ValueError, match="already"):
        protocol.select("alpha", [0.5], score, criterion="x", higher_is_better=True)
    with pytest.raises(ValueError, match="not been selected"):
        protocol.report("epochs", 1.0)
    protocol.report("alpha", 0.85)
    with pytest.raises(ValueError, match="once"):
        protocol.report("alpha", 0.9)
    record = json.loads(json.dumps(protocol.to_json()))
    assert record["selections"][0]["selection_split"] == "val prompts"
    assert record["selections"][0]["report_split"] == "test prompts"
    assert record["selections"][0]["test_score"] == 0.85
    table = protocol.markdown()
    assert "| alpha |" in table and "val prompts" in table and "test prompts" in table
    with pytest.raises(ValueError, match="different"):
        SelectionProtocol(validation_split="test", test_split="test")


def test_selection_protocol_lower_is_better_and_ties():
    protocol = SelectionProtocol(validation_split="v", test_split="t")
    assert protocol.select("k", [3, 1, 2], lambda c: {3: 1.0, 1: 1.0, 2: 5.0}[c], criterion="loss",
                           higher_is_better=False) == 3
