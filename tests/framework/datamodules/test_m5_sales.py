"""M5 loader on small files the test writes in M5's format: flags, prices, windows, and clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from framework.datamodules.m5_sales import M5Sales

DAYS = 120


def write_m5(root, *, days: int = DAYS, calendar_days: int | None = None, negative: bool = False):
    rng = np.random.default_rng(0)
    items = [("FOODS_1_001", "CA_1", "CA"), ("FOODS_1_002", "TX_1", "TX"), ("HOBBIES_1_001", "WI_1", "WI")]
    sales = pd.DataFrame({
        "id": [f"{i}_{s}_evaluation" for i, s, _ in items], "item_id": [i for i, _, _ in items],
        "dept_id": ["FOODS_1", "FOODS_1", "HOBBIES_1"], "cat_id": ["FOODS", "FOODS", "HOBBIES"],
        "store_id": [s for _, s, _ in items], "state_id": [st for _, _, st in items]})
    values = rng.poisson(3.0, (len(items), days))
    if negative:
        values[1, 7] = -2
    sales = pd.concat([sales, pd.DataFrame(values, columns=[f"d_{k}" for k in range(1, days + 1)])], axis=1)
    sales.to_csv(root / "sales_train_evaluation.csv", index=False)
    n_cal = calendar_days or days
    dates = pd.date_range("2011-01-29", periods=n_cal)
    cal = pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "wm_yr_wk": 11101 + np.arange(n_cal) // 7,
                        "weekday": dates.day_name(), "wday": (dates.dayofweek + 2) % 7 + 1, "month": dates.month,
                        "year": dates.year, "d": [f"d_{k}" for k in range(1, n_cal + 1)],
                        "event_name_1": None, "event_type_1": None, "event_name_2": None, "event_type_2": None,
                        "snap_CA": 0, "snap_TX": 0, "snap_WI": 0})
    cal.loc[[10, 60], "event_name_1"] = "SuperBowl"
    cal.loc[[30], "event_name_2"] = "Easter"
    cal.loc[list(range(40, 50)), "snap_CA"] = 1
    cal.loc[list(range(45, 55)), "snap_TX"] = 1
    cal.to_csv(root / "calendar.csv", index=False)
    weeks = np.unique(cal["wm_yr_wk"])
    rows = [(s, i, w, 2.0 if w < weeks[8] else 1.5) for i, s, _ in items[:2] for w in weeks[2:]]
    pd.DataFrame(rows, columns=["store_id", "item_id", "wm_yr_wk", "sell_price"]).to_csv(
        root / "sell_prices.csv", index=False)
    return values


def make(root, **kwargs):
    return M5Sales(data_dir=str(root), context_length=28, horizon=7, val_days=14, test_days=14, batch_size=2,
                   **kwargs)


def test_flags_prices_and_windows(tmp_path):
    values = write_m5(tmp_path)
    data = make(tmp_path)
    data.setup()
    arrays = data.load_arrays()
    np.testing.assert_array_equal(arrays["target"], values.astype(np.float32))
    assert data.num_features == 5 + 6 and data.feature_names[0] == "peak"
    peak = arrays["peak"]
    expected = np.zeros((3, DAYS), bool)
    expected[:, [10, 30, 60]] = True
    expected[0, 40:50] = True     # SNAP CA for the CA item
    expected[1, 45:55] = True     # SNAP TX for the TX item
    np.testing.assert_array_equal(peak.astype(bool), expected)
    price = arrays["series_features"][..., 3]
    known = arrays["series_features"][..., 4]
    assert known[0, :14].sum() == 0 and known[0, 14:].all() and known[2].sum() == 0
    np.testing.assert_allclose(price[0, 20], 2.0 / np.median([2.0] * 6 + [1.5] * (len(np.unique(
        np.arange(DAYS) // 7)) - 8)), rtol=1e-6)
    item = data.datasets["test"][0]
    assert item["target"].shape == (35,) and item["features"].shape == (35, 11)
    np.testing.assert_array_equal(item["features"][:, 0].numpy(), item["peak"].numpy())
    assert len(data.datasets["train"]) > 0
    events_only = make(tmp_path, snap_as_peak=False)
    assert events_only.load_arrays()["peak"].sum() == 3 * 3


def test_negative_demand_is_a_clear_error(tmp_path):
    write_m5(tmp_path, negative=True)
    with pytest.raises(ValueError, match=r"non-negative; series 1 day 7 has -2"):
        make(tmp_path).setup()


def test_calendar_must_cover_the_forecast_horizon(tmp_path):
    write_m5(tmp_path, calendar_days=DAYS - 5)
    with pytest.raises(ValueError, match="peak flags .* are missing for 5 sales days"):
        make(tmp_path).setup()


def test_missing_files_and_horizon_longer_than_history(tmp_path):
    with pytest.raises(FileNotFoundError, match="sales_file"):
        M5Sales(data_dir=str(tmp_path))
    write_m5(tmp_path)
    with pytest.raises(ValueError, match="longer than the history"):
        M5Sales(data_dir=str(tmp_path), context_length=7, horizon=28)
