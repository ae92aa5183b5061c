"""Synthetic retail generator and windows: determinism, the note's sanity numbers (carry-over of a raw-history
mean on the most-affected subset, none for the peak-masked mean), subset definitions, time split, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.datamodules.retail.datamodule_base import validate_demand_arrays
from framework.datamodules.retail.generator import generate_retail_demand
from framework.datamodules.retail.subsets import days_since_peak, most_affected_origins, post_peak_flags
from framework.datamodules.retail_demand import RetailDemand
from framework.metrics.quantile_forecast import QuantileForecastMetrics
from framework.models.components.forecasting.scaling import forward_fill_peaks


def test_generator_is_deterministic_and_has_the_notes_structure():
    a = generate_retail_demand(num_series=20, num_days=800, seed=3)
    b = generate_retail_demand(num_series=20, num_days=800, seed=3)
    c = generate_retail_demand(num_series=20, num_days=800, seed=4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["target"], c["target"])
    assert (a["target"] >= 0).all() and np.array_equal(a["target"], np.round(a["target"]))
    assert a["holiday"][:, [190, 191, 330, 333, 355, 361]].all() and not a["holiday"][:, [192, 334, 362]].any()
    peak = (a["holiday"] | a["promotion"]).astype(bool)
    assert 0.05 < peak.mean() < 0.2
    assert (a["lift"][~peak] == 1).all() and (a["lift"][peak] > 0).all()


def test_post_peak_and_most_affected_match_brute_force():
    rng = np.random.default_rng(0)
    peak = rng.random((4, 60)) < 0.1
    ppe = post_peak_flags(peak, 5)
    since = days_since_peak(peak)
    for s in range(4):
        for t in range(60):
            prior = [e for e in range(t + 1) if peak[s, e]]
            assert ppe[s, t] == (not peak[s, t] and bool(prior) and 1 <= t - prior[-1] <= 5)
            if prior:
                assert since[s, t] == t - prior[-1]
    f = np.array([10, 20, 30, 40])
    got = most_affected_origins(peak, f, np.arange(4))
    for s in range(4):
        prior = [e for e in range(f[s]) if peak[s, e]]
        assert got[s] == (bool(prior) and 1 <= f[s] - prior[-1] <= 7)


@pytest.fixture(scope="module")
def retail(tmp_path_factory):
    data = RetailDemand(num_series=120, num_days=1200, batch_size=16,
                        cache_dir=str(tmp_path_factory.mktemp("retail-cache")))
    data.setup()
    return data


def test_raw_history_mean_carries_peaks_over_and_masked_mean_does_not(retail):
    """The note's sanity check: 28-day mean of raw history strongly over-biased on the most-affected subset."""
    test = retail.datasets["test"]
    items = [test[i] for i in range(len(test))]
    L = retail.context_length
    y = torch.stack([it["target"] for it in items])
    peak = torch.stack([it["peak"] for it in items])
    filled, observed = forward_fill_peaks(y[:, :L], peak[:, :L])
    raw = y[:, L - 28:L].mean(1)
    obs = observed[:, L - 28:L].float()
    masked = (filled[:, L - 28:L] * obs).sum(1) / obs.sum(1).clamp_min(1)
    results = {}
    for name, level in (("raw", raw), ("masked", masked)):
        metric = QuantileForecastMetrics(quantiles=[0.5, 0.9])
        metric.update(level[:, None, None].expand(-1, retail.horizon, 2), y[:, L:], peak[:, L:],
                      torch.stack([it["post_peak"] for it in items])[:, L:],
                      torch.stack([it["most_affected"] for it in items]))
        results[name] = {k: float(v) for k, v in metric.compute().items()}
    assert results["raw"]["bias50_most_affected"] > 0.2          # note: +46 %
    assert abs(results["masked"]["bias50_most_affected"]) < 0.2   # note: −7 %
    assert results["masked"]["wql50_most_affected"] < 0.85 * results["raw"]["wql50_most_affected"]
    assert results["raw"]["bias50_peak"] < -0.4                   # peaks are under-forecast by a level forecast
    assert 0.05 < results["raw"]["fraction_peak"] < 0.2 and 0.15 < results["raw"]["fraction_post_peak"] < 0.35


def test_windows_split_in_time_and_carry_the_covariates(retail):
    L, H = retail.context_length, retail.horizon
    T = retail.num_days
    train, val, test = (retail.datasets[k] for k in ("train", "val", "test"))
    assert int((train.starts + L + H).max()) <= T - 182 - 182
    assert int((val.starts + L).min()) == T - 364 and int((val.starts + L + H).max()) <= T - 182
    assert int((test.starts + L).min()) == T - 182 and int((test.starts + L + H).max()) <= T
    assert len(test) == 120 * len(range(T - 182, T - H + 1, 7))
    item = test[5]
    assert item["target"].shape == (L + H,) and item["features"].shape == (L + H, retail.num_features)
    torch.testing.assert_close(item["features"][:, 0], item["peak"])
    arrays = retail.load_arrays()
    s, a = int(item["series"]), int(item["start"])
    np.testing.assert_array_equal(item["target"].numpy(), arrays["target"][s, a:a + L + H])
    batch = next(iter(retail.train_dataloader()))
    assert batch["target"].shape == (16, L + H) and batch["loss_scale"].shape == (16,)


def test_cache_is_reused(retail, tmp_path_factory):
    again = RetailDemand(num_series=120, num_days=1200, cache_dir=retail.cache_dir)
    np.testing.assert_array_equal(again.raw()["target"], retail.raw()["target"])


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="horizon=60 is longer than the history context_length=28"):
        RetailDemand(context_length=28, horizon=60)
    with pytest.raises(ValueError, match="num_days=300 must be >="):
        RetailDemand(num_days=300)
    target = np.ones((2, 10), np.float32)
    target[1, 3] = -1
    with pytest.raises(ValueError, match="non-negative; series 1 day 3"):
        validate_demand_arrays(target, np.zeros((2, 10)))
    with pytest.raises(ValueError, match="peak flags must be known for every day"):
        validate_demand_arrays(np.ones((2, 10)), np.zeros((2, 8)))
    flags = np.zeros((2, 10))
    flags[0, 9] = np.nan
    with pytest.raises(ValueError, match="peak flags must be 0 or 1"):
        validate_demand_arrays(np.ones((2, 10)), flags)


def test_promotion_level_shifts_are_off_by_default_and_raise_the_level_when_on():
    base = generate_retail_demand(num_series=10, num_days=800, seed=5)
    same = generate_retail_demand(num_series=10, num_days=800, seed=5, promotion_level_shift_fraction=0.0)
    shifted = generate_retail_demand(num_series=10, num_days=800, seed=5, promotion_level_shift_fraction=1.0)
    np.testing.assert_array_equal(base["target"], same["target"])
    assert shifted["mean"][:, -100:].mean() > 1.5 * base["mean"][:, -100:].mean()
    with pytest.raises(ValueError, match="promotion_level_shift_fraction must lie in"):
        RetailDemand(promotion_level_shift_fraction=1.5)
