"""Pooling seeds of the flow-matching comparison: mean ± standard error against numpy, paired differences, verdicts."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from benchmarks.flow_matching_seeds import few_step, mean_and_standard_error, pool


def test_mean_and_standard_error_match_numpy():
    values = [0.3, 0.5, 0.45, 0.41]
    mean, se = mean_and_standard_error(values)
    assert math.isclose(mean, np.mean(values))
    assert math.isclose(se, np.std(values, ddof=1) / math.sqrt(len(values)))
    assert math.isnan(mean_and_standard_error([1.0])[1])


def _rows(bridge: float, other: float) -> list[dict]:
    return [{"system": "ns", "path": "bridge", "intervals": 10, "rfne": bridge},
            {"system": "ns", "path": "si", "intervals": 10, "rfne": other},
            {"system": "ns", "path": "bridge", "intervals": 50, "rfne": 9.0}]


def test_paired_differences_and_verdicts():
    per_path, paired = pool({0: _rows(0.10, 0.12), 1: _rows(0.11, 0.125), 2: _rows(0.09, 0.115)}, 10)
    bridge = next(r for r in per_path if r["path"] == "bridge")
    assert bridge["seeds"] == 3 and math.isclose(bridge["mean"], 0.10) and bridge["measure"] == "rfne"
    (difference,) = paired
    d = np.array([-0.02, -0.015, -0.025])
    assert math.isclose(difference["difference_mean"], d.mean())
    low, high = stats.t.interval(0.95, df=2, loc=d.mean(), scale=stats.sem(d))  # scipy's paired t-interval
    assert np.allclose(difference["difference_ci95"], [low, high])
    assert difference["bridge_better_claim"] == "holds"
    # two standard errors from 0 but a 3-seed t-interval (t = 4.30) still contains it: within noise
    _, close = pool({0: _rows(0.10, 0.12), 1: _rows(0.11, 0.111), 2: _rows(0.09, 0.115)}, 10)
    d = np.array([-0.02, -0.001, -0.025])
    assert abs(d.mean()) > 2 * stats.sem(d) and close[0]["bridge_better_claim"] == "within noise"
    _, noisy = pool({0: _rows(0.10, 0.12), 1: _rows(0.13, 0.11), 2: _rows(0.10, 0.10)}, 10)
    assert noisy[0]["bridge_better_claim"] == "within noise"
    _, worse = pool({0: _rows(0.12, 0.10), 1: _rows(0.125, 0.11), 2: _rows(0.115, 0.09)}, 10)
    assert worse[0]["bridge_better_claim"] == "reversed"


def test_validation_convergence_measure_is_pooled_too():
    rows = {s: [{"system": "ns", "path": p, "intervals": 10, "rfne": 0.1, "val_rfne_mean": v}
                for p, v in (("bridge", 0.09 + s / 1000), ("si", 0.095 + s / 1000))] for s in range(3)}
    per_path, paired = pool(rows, 10)
    assert {r["measure"] for r in per_path} == {"rfne", "val_rfne_mean"}
    (val,) = [r for r in paired if r["measure"] == "val_rfne_mean"]
    assert math.isclose(val["difference_mean"], -0.005) and val["bridge_better_claim"] == "holds"
    (test,) = [r for r in paired if r["measure"] == "rfne"]
    assert test["difference_mean"] == 0.0 and test["bridge_better_claim"] == "within noise"


def test_few_step_ratio_interval_against_scipy():
    def rows(r5, r10, r50):
        return [{"system": "ns", "path": "bridge", "intervals": k, "rfne": v} for k, v in ((5, r5), (10, r10), (50, r50))]

    runs = {0: rows(0.101, 0.100, 0.100), 1: rows(0.099, 0.1, 0.1), 2: rows(0.1005, 0.1, 0.1)}
    five, ten = few_step(runs)
    r = np.array([1.01, 0.99, 1.005])
    assert five["intervals"] == 5 and math.isclose(five["ratio_mean"], r.mean())
    assert np.allclose(five["ratio_ci95"], stats.t.interval(0.95, df=2, loc=r.mean(), scale=stats.sem(r)))
    assert five["within_5_percent"] == "holds" and ten["ratio_mean"] == 1.0
    far = few_step({s: rows(0.2 + s / 100, 0.1, 0.1) for s in range(3)})
    assert far[0]["within_5_percent"] == "fails"
