"""clopper_pearson_interval against hand-written beta quantiles and the closed forms at 0 and n successes; t_interval
against scipy.stats.t.interval."""

import numpy as np
import pytest
from scipy import stats

from framework.metrics.intervals import clopper_pearson_interval, seed_difference, t_interval


@pytest.mark.parametrize(("k", "n"), [(1, 1), (2, 241), (37, 71), (50, 100), (70, 71), (3, 10)])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_bounds_are_the_beta_quantiles(k, n, confidence):
    alpha = 1 - confidence
    interval = clopper_pearson_interval(k, n, confidence=confidence)
    # Clopper-Pearson: low = Beta(k, n - k + 1).ppf(alpha / 2), high = Beta(k + 1, n - k).ppf(1 - alpha / 2).
    low = stats.beta.ppf(alpha / 2, k, n - k + 1)
    high = stats.beta.ppf(1 - alpha / 2, k + 1, n - k) if k < n else 1.0
    assert interval.low == pytest.approx(low, rel=1e-9, abs=1e-12)
    assert interval.high == pytest.approx(high, rel=1e-9, abs=1e-12)
    assert interval.estimate == k / n and interval.n == n and interval.confidence == confidence
    assert interval.low <= interval.estimate <= interval.high


@pytest.mark.parametrize("n", [1, 36, 71, 1000])
def test_closed_forms_at_zero_and_all_successes(n):
    alpha = 0.05
    none = clopper_pearson_interval(0, n)
    assert none.low == 0.0 and none.high == pytest.approx(1 - (alpha / 2) ** (1 / n), rel=1e-9)
    every = clopper_pearson_interval(n, n)
    assert every.high == 1.0 and every.low == pytest.approx((alpha / 2) ** (1 / n), rel=1e-9)


def test_coverage_is_at_least_the_confidence_level():
    # Exact coverage by summing binomial probabilities of the outcomes whose interval contains the true rate.
    n = 30
    intervals = [clopper_pearson_interval(k, n) for k in range(n + 1)]
    for rate in np.linspace(0.01, 0.99, 25):
        covered = sum(stats.binom.pmf(k, n, rate) for k, iv in enumerate(intervals) if iv.low <= rate <= iv.high)
        assert covered >= 0.95 - 1e-12


def test_numpy_integers_are_accepted():
    assert clopper_pearson_interval(np.int64(2), np.int64(241)) == clopper_pearson_interval(2, 241)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"successes": 3, "trials": 0}, "trials must be >= 1, got 0"),
    ({"successes": 5, "trials": 4}, r"successes must lie in \[0, trials=4\], got 5"),
    ({"successes": -1, "trials": 4}, "got -1"),
    ({"successes": 1.5, "trials": 4}, "successes must be an integer, got 1.5"),
    ({"successes": 1, "trials": True}, "trials must be an integer, got True"),
    ({"successes": 1, "trials": 4, "confidence": 1.0}, r"confidence must lie in \(0, 1\), got 1.0"),
])
def test_bad_input_names_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        clopper_pearson_interval(**kwargs)


def test_t_interval_is_scipys_student_t_interval():
    values = [0.31, 0.27, 0.35, 0.30]
    interval = t_interval(values)
    low, high = stats.t.interval(0.95, df=3, loc=np.mean(values), scale=stats.sem(values))
    assert (interval.estimate, interval.n) == (pytest.approx(np.mean(values)), 4)
    assert interval.low == pytest.approx(low, rel=1e-12) and interval.high == pytest.approx(high, rel=1e-12)
    with pytest.raises(ValueError, match="at least 2 numbers"):
        t_interval([1.0])


def test_seed_difference_is_the_t_interval_of_the_differences():
    a, b = [0.9, 0.8, 0.85, 0.7], [0.7, 0.65, 0.66, 0.72]
    paired, direct = seed_difference(a, b, confidence=0.9), t_interval(np.subtract(a, b), confidence=0.9)
    assert (paired.estimate, paired.low, paired.high, paired.n) == (direct.estimate, direct.low, direct.high, direct.n)
    assert paired.method == "paired t over seeds"
