"""Pooling seeds of the flow-matching comparison: mean ± standard error against numpy, paired differences, verdicts."""

from __future__ import annotations

import math

import numpy as np

from benchmarks.flow_matching_seeds import mean_and_standard_error, pool


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
    assert bridge["seeds"] == 3 and math.isclose(bridge["rfne_mean"], 0.10)
    (difference,) = paired
    assert math.isclose(difference["difference_mean"], np.mean([-0.02, -0.015, -0.025]))
    assert difference["bridge_better_claim"] == "holds"
    _, noisy = pool({0: _rows(0.10, 0.12), 1: _rows(0.13, 0.11), 2: _rows(0.10, 0.10)}, 10)
    assert noisy[0]["bridge_better_claim"] == "within noise"
    _, worse = pool({0: _rows(0.12, 0.10), 1: _rows(0.125, 0.11), 2: _rows(0.115, 0.09)}, 10)
    assert worse[0]["bridge_better_claim"] == "reversed"
