"""Quantile-forecast metrics against a numpy reference (GluonTS convention) and under 2-process DDP."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from framework.metrics.quantile_forecast import (
    SUBSETS,
    QuantileForecastMetrics,
    p50_bias,
    subset_masks,
    weighted_quantile_loss,
)
from tests.helpers.metric_ddp import assert_ddp_matches_single_process

QUANTILES = [0.1, 0.5, 0.9]


def numpy_reference(f: np.ndarray, y: np.ndarray, peak, ppe, ma) -> dict[str, float]:
    """Loops straight from the definitions: 2·Σ|(ŷ−y)(1{y<=ŷ}−q)| / Σ|y| and Σŷ/Σy − 1."""
    f, y = f.astype(np.float64), y.astype(np.float64)
    masks = {"all": np.ones_like(peak, bool), "peak": peak, "post_peak": ppe,
             "most_affected": ma[:, None].repeat(y.shape[1], 1) & ppe}
    out = {}
    for name, m in masks.items():
        for q, j in ((0.5, 1), (0.9, 2)):
            num = sum(2 * abs((f[n, h, j] - y[n, h]) * ((y[n, h] <= f[n, h, j]) - q))
                      for n in range(y.shape[0]) for h in range(y.shape[1]) if m[n, h])
            out[f"wql{int(q * 100)}_{name}"] = num / sum(abs(y[m]))
        out[f"bias50_{name}"] = f[..., 1][m].sum() / y[m].sum() - 1
        out[f"fraction_{name}"] = m.mean()
    return out


def random_batch(rng: np.random.Generator, n: int = 12, h: int = 5):
    y = rng.poisson(5.0, (n, h)).astype(np.float32)
    base = rng.gamma(2.0, 3.0, (n, h, 1))
    f = np.sort(base + rng.normal(0, 2, (n, h, 3)), axis=-1).astype(np.float32)
    peak = rng.random((n, h)) < 0.3
    ppe = (rng.random((n, h)) < 0.4) & ~peak
    ma = rng.random(n) < 0.5
    return f, y, peak, ppe, ma


def test_matches_numpy_reference_over_batches():
    rng = np.random.default_rng(0)
    batches = [random_batch(rng) for _ in range(3)]
    metric = QuantileForecastMetrics(quantiles=QUANTILES)
    for f, y, peak, ppe, ma in batches:
        metric.update(*(torch.as_tensor(a) for a in (f, y, peak, ppe, ma)))
    got = {k: float(v) for k, v in metric.compute().items()}
    expected = numpy_reference(*(np.concatenate([b[i] for b in batches]) for i in range(5)))
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_functional_core_and_perfect_forecast():
    y = torch.tensor([[1.0, 2.0, 3.0]])
    assert float(weighted_quantile_loss(y, y, 0.5)) == 0.0
    assert float(p50_bias(2 * y, y)) == pytest.approx(1.0)
    # Under-forecast by 1 everywhere at q = 0.9: loss 2·0.9·1 per element over Σ|y| = 6.
    assert float(weighted_quantile_loss(y - 1, y, 0.9)) == pytest.approx(2 * 0.9 * 3 / 6)
    masks = subset_masks(torch.tensor([[1, 0, 0]]), torch.tensor([[0, 1, 1]]), torch.tensor([False]))
    assert masks["most_affected"].sum() == 0 and masks["all"].all()


def test_empty_subset_is_nan_and_bad_input_raises():
    metric = QuantileForecastMetrics(quantiles=QUANTILES)
    f, y, peak, ppe, ma = random_batch(np.random.default_rng(1))
    metric.update(torch.as_tensor(f), torch.as_tensor(y), torch.zeros_like(torch.as_tensor(peak)),
                  torch.as_tensor(ppe), torch.as_tensor(ma))
    out = metric.compute()
    assert torch.isnan(out["wql50_peak"]) and torch.isfinite(out["wql50_all"])
    with pytest.raises(ValueError, match="must include"):
        QuantileForecastMetrics(quantiles=[0.1, 0.5])
    with pytest.raises(ValueError, match=r"forecasts must be \[N, H, Q=3\]"):
        metric.update(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2))


def test_ddp_matches_single_process():
    rng = np.random.default_rng(2)
    batches = [tuple(torch.as_tensor(a) for a in random_batch(rng, n=7)) for _ in range(4)]
    assert_ddp_matches_single_process(functools.partial(QuantileForecastMetrics, quantiles=QUANTILES), batches)


def test_subsets_constant():
    assert SUBSETS == ("all", "peak", "post_peak", "most_affected")
