"""The M5 (Walmart) sales data from files the user downloaded, with events and SNAP days as peak-event flags.

Reads, from ``data_dir``, the competition's ``sales_train_evaluation.csv`` (or ``sales_train_validation.csv``;
columns ``id, item_id, dept_id, cat_id, store_id, state_id, d_1 .. d_N``), ``calendar.csv`` (``date, wm_yr_wk,
weekday, wday, month, year, d, event_name_1, event_type_1, event_name_2, event_type_2, snap_CA, snap_TX, snap_WI``)
and, optionally, ``sell_prices.csv`` (``store_id, item_id, wm_yr_wk, sell_price``). Nothing is downloaded.

Peak-event flags (known in the future, as the calendar is): calendar event days (``event_name_1`` or ``_2`` set) and
— with ``snap_as_peak`` — the SNAP days of the item's state. Covariates per day: ``peak, event, snap,
relative_price`` (sell price / the item-store median price, 1 before the first price), ``price_known``, plus the
calendar features of :mod:`framework.datamodules.retail.windows` (day of week / year, days since / until an event). Batches
are those of :class:`framework.datamodules.retail_demand.RetailDemand`; the parsed arrays are cached with 🤗 datasets (keyed by
the files' paths, sizes and modification times).

Config example::

    data:
      class_path: framework.datamodules.m5_sales.M5Sales
      init_args: {data_dir: /data/m5, max_series: 3049, context_length: 112, horizon: 28}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from framework.datamodules.retail.datamodule_base import RetailWindowsDataModule, validate_demand_arrays
from framework.datamodules.retail.windows import TIME_FEATURE_NAMES, calendar_features, event_distance_features
from framework.base.data_files import read_csv_header
from framework.validation import require_existing_path

__all__ = ["M5Sales", "check_m5_files", "load_m5_arrays"]

_STATES = ("CA", "TX", "WI")
_SALES_COLUMNS = ("id", "item_id", "store_id", "state_id")
_CALENDAR_COLUMNS = ("d", "date", "wm_yr_wk", "event_name_1", "event_name_2", *[f"snap_{s}" for s in _STATES])
_PRICES_COLUMNS = ("store_id", "item_id", "wm_yr_wk", "sell_price")


def check_m5_files(sales_path: Path, calendar_path: Path, prices_path: Path | None) -> None:
    """Headers and first rows of the M5 files (milliseconds): each non-empty, CSV text, with its columns."""
    header = read_csv_header("sales_file", sales_path, required=_SALES_COLUMNS)
    if not any(column.startswith("d_") for column in header):
        raise ValueError(f"sales_file={str(sales_path)!r} has no day columns d_1, d_2, ...; not an M5 sales file")
    read_csv_header("calendar_file", calendar_path, required=_CALENDAR_COLUMNS)
    if prices_path is not None:
        read_csv_header("prices_file", prices_path, required=_PRICES_COLUMNS)


def load_m5_arrays(*, sales_path: str, calendar_path: str, prices_path: str | None, max_series: int | None,
                   snap_as_peak: bool, file_stamp: Any = None) -> dict[str, np.ndarray]:
    """Parse the M5 files into arrays (``file_stamp`` only keys the cache).

    Returns:
        ``target [S, T]`` float32, ``event [S, T]``, ``snap [S, T]``, ``peak [S, T]`` int8, ``relative_price
        [S, T]`` float32, ``price_known [S, T]`` int8, ``day_of_week [S, T]``/``day_of_year [S, T]`` int16 (rows
        repeated so that every column has S rows), ``series_id [S]`` str.
    """
    import pandas as pd

    sales = pd.read_csv(sales_path, nrows=max_series)
    day_columns = [c for c in sales.columns if c.startswith("d_")]
    missing_meta = [c for c in _SALES_COLUMNS if c not in sales.columns]
    if missing_meta or not day_columns:
        raise ValueError(f"{sales_path}: not an M5 sales file (needs id, item_id, store_id, state_id and d_1.. "
                         f"columns; missing {missing_meta or 'd_ columns'})")
    target = sales[day_columns].to_numpy(dtype=np.float64)
    calendar = pd.read_csv(calendar_path)
    absent = [c for c in _CALENDAR_COLUMNS if c not in calendar.columns]
    if absent:
        raise ValueError(f"{calendar_path}: not an M5 calendar (missing columns {absent})")
    calendar = calendar.set_index("d")
    uncovered = [d for d in day_columns if d not in calendar.index]
    if uncovered:
        raise ValueError(f"{calendar_path}: peak flags (events, SNAP) are missing for {len(uncovered)} sales days, "
                         f"e.g. {uncovered[:3]}; the calendar must cover every day of the sales file, forecast "
                         "horizons included")
    cal = calendar.loc[day_columns]
    snap_table = cal[[f"snap_{s}" for s in _STATES]]
    if snap_table.isna().any().any():
        raise ValueError(f"{calendar_path}: SNAP flags are missing (empty) on some days; they must be 0 or 1")
    event_day = (cal["event_name_1"].notna() | cal["event_name_2"].notna()).to_numpy()
    states = sales["state_id"].to_numpy()
    unknown = sorted(set(states) - set(_STATES))
    if unknown:
        raise ValueError(f"{sales_path}: unknown state_id {unknown}; M5 has {list(_STATES)}")
    snap = np.stack([snap_table[f"snap_{s}"].to_numpy() for s in states]).astype(bool)
    event = np.broadcast_to(event_day, target.shape)
    peak = event | snap if snap_as_peak else event.copy()
    relative_price = np.ones(target.shape, dtype=np.float32)
    price_known = np.zeros(target.shape, dtype=np.int8)
    if prices_path is not None:
        prices = pd.read_csv(prices_path)
        week = cal["wm_yr_wk"].to_numpy()
        table = prices.pivot_table(index=["store_id", "item_id"], columns="wm_yr_wk", values="sell_price")
        keys = list(zip(sales["store_id"], sales["item_id"]))
        table = table.reindex(index=pd.MultiIndex.from_tuples(keys), columns=np.unique(week))
        weekly = table.to_numpy(dtype=np.float64)
        daily = weekly[:, np.searchsorted(np.unique(week), week)]
        known = np.isfinite(daily)
        median = np.nanmedian(np.where(known, daily, np.nan), axis=1, keepdims=True) if known.any() else None
        if median is not None:
            median = np.where(np.isfinite(median) & (median > 0), median, 1.0)
            relative_price = np.where(known, daily / median, 1.0).astype(np.float32)
        price_known = known.astype(np.int8)
    dates = pd.to_datetime(cal["date"])
    dow = np.broadcast_to(dates.dt.day_of_week.to_numpy(), target.shape).astype(np.int16)
    doy = np.broadcast_to(dates.dt.day_of_year.to_numpy() - 1, target.shape).astype(np.int16)
    return {"target": target, "event": event.astype(np.int8), "snap": snap.astype(np.int8),
            "peak": peak.astype(np.int8), "relative_price": relative_price, "price_known": price_known,
            "day_of_week": dow, "day_of_year": doy, "series_id": sales["id"].astype(str).tolist()}


class M5Sales(RetailWindowsDataModule):
    """M5 daily unit sales with peak-event flags.

    Args:
        data_dir: folder with the M5 csv files (required; nothing is downloaded).
        sales_file: ``sales_train_evaluation.csv`` (1,941 days) or ``sales_train_validation.csv`` (1,913).
        calendar_file, prices_file: file names in ``data_dir`` (``prices_file=None``: no price covariates).
        max_series: read only the first rows of the sales file (``None``: all 30,490).
        snap_as_peak: SNAP days of the item's state are peak events (besides calendar events).
        context_length, horizon, val_days, test_days, eval_stride, train_stride, post_peak_window: see
            ``RetailWindowsDataModule`` (M5's own test period is the last 28 days).
        batch_size, num_workers, seed, cache_dir, pin_memory: see ``FrameworkDataModule``.
    """

    def __init__(self, *, data_dir: str, sales_file: str = "sales_train_evaluation.csv",
                 calendar_file: str = "calendar.csv", prices_file: str | None = "sell_prices.csv",
                 max_series: int | None = None, snap_as_peak: bool = True, context_length: int = 112,
                 horizon: int = 28, val_days: int = 84, test_days: int = 84, eval_stride: int = 7,
                 train_stride: int = 7, post_peak_window: int = 14, batch_size: int = 32, num_workers: int = 0,
                 seed: int = 0, cache_dir: str | None = None, pin_memory: bool = False) -> None:
        super().__init__(context_length=context_length, horizon=horizon, val_days=val_days, test_days=test_days,
                         eval_stride=eval_stride, train_stride=train_stride, post_peak_window=post_peak_window,
                         batch_size=batch_size, num_workers=num_workers, seed=seed, cache_dir=cache_dir,
                         pin_memory=pin_memory)
        root = require_existing_path("data_dir", data_dir, kind="dir")
        self.sales_path = require_existing_path("sales_file", root / sales_file, kind="file")
        self.calendar_path = require_existing_path("calendar_file", root / calendar_file, kind="file")
        self.prices_path = (require_existing_path("prices_file", root / prices_file, kind="file")
                            if prices_file is not None else None)
        check_m5_files(self.sales_path, self.calendar_path, self.prices_path)
        if max_series is not None and (not isinstance(max_series, int) or isinstance(max_series, bool)
                                       or max_series < 1):
            raise ValueError(f"max_series must be a positive integer or None, got {max_series!r}")
        self.max_series, self.snap_as_peak = max_series, bool(snap_as_peak)
        self.series_ids: list[str] = []
        self._arrays: dict[str, Any] | None = None

    def _stamp(self) -> list:
        paths = [p for p in (self.sales_path, self.calendar_path, self.prices_path) if p is not None]
        return [[str(Path(p).resolve()), os.path.getsize(p), os.path.getmtime(p)] for p in paths]

    def load_arrays(self) -> dict[str, Any]:
        if self._arrays is None:
            raw = self.cached("m5-sales", load_m5_arrays, version=1, sales_path=str(self.sales_path),
                              calendar_path=str(self.calendar_path),
                              prices_path=str(self.prices_path) if self.prices_path else None,
                              max_series=self.max_series, snap_as_peak=self.snap_as_peak,
                              file_stamp=self._stamp())[:]
            target = np.asarray(raw["target"], dtype=np.float64)
            peak = np.asarray(raw["peak"]).astype(np.float32)
            validate_demand_arrays(target, peak, str(self.sales_path))
            dow, doy = np.asarray(raw["day_of_week"])[0], np.asarray(raw["day_of_year"])[0]
            event = np.asarray(raw["event"])
            time_features = np.concatenate([calendar_features(dow, doy), event_distance_features(event[0])], axis=1)
            series_features = np.stack([peak, event, np.asarray(raw["snap"]), np.asarray(raw["relative_price"]),
                                        np.asarray(raw["price_known"])], axis=-1).astype(np.float32)
            self.series_ids = [str(s) for s in raw["series_id"]]
            self._arrays = {"target": target.astype(np.float32), "peak": peak, "series_features": series_features,
                            "time_features": time_features,
                            "feature_names": ["peak", "event", "snap", "relative_price", "price_known",
                                              *TIME_FEATURE_NAMES]}
        return self._arrays
