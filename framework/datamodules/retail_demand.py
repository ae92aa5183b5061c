"""Synthetic daily retail demand with promotions and holidays (peak events), for SPADE and the MQ forecasters.

The generator (:mod:`framework.datamodules.retail.generator`, research note §1.7) reproduces the post-peak carry-over: a
28-day mean of the raw history over-forecasts the "most affected" post-peak targets strongly, the same mean on
peak-masked history does not. Data are cached with 🤗 datasets (generated once per argument set).

Covariates per day (all known in the future): ``peak, holiday, promotion`` flags, day-of-week and day-of-year
sin/cos, days since / until the last / next holiday (clipped at 183, scaled to [−0.5, 0.5]).

Batches are dicts: ``target [B, L+H]``, ``features [B, L+H, 9]``, ``peak [B, L+H]``, ``post_peak [B, L+H]``,
``most_affected [B]``, ``loss_scale [B]``, ``series [B]``, ``start [B]`` (see
:class:`framework.datamodules.retail.windows.ForecastWindows`). Training items are forking windows, validation / test items
rolling forecast-creation dates every ``eval_stride`` days over the last ``val_days`` / ``test_days``.

Config example::

    data:
      class_path: framework.datamodules.retail_demand.RetailDemand
      init_args: {num_series: 500, num_days: 1200, context_length: 112, horizon: 28, batch_size: 32}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.datamodules.retail.datamodule_base import RetailWindowsDataModule
from framework.datamodules.retail.generator import HOLIDAYS, generate_retail_demand
from framework.datamodules.retail.windows import TIME_FEATURE_NAMES, calendar_features, event_distance_features

__all__ = ["RetailDemand"]


class RetailDemand(RetailWindowsDataModule):
    """Synthetic retail demand DataModule.

    Args:
        num_series: S series.
        num_days: T days per series (the note's prototype: 1200).
        promotions_per_year, lift_median, level_shift_fraction, dispersion, promotion_level_shift_fraction:
            generator knobs (see :func:`framework.datamodules.retail.generator.generate_retail_demand`).
        context_length, horizon, val_days, test_days, eval_stride, train_stride, post_peak_window: see
            ``RetailWindowsDataModule``.
        batch_size, num_workers, seed (also the generator's seed), cache_dir, pin_memory: see ``FrameworkDataModule``.
    """

    def __init__(self, *, num_series: int = 500, num_days: int = 1200, promotions_per_year: float = 4.0,
                 lift_median: float = 3.0, level_shift_fraction: float = 0.3, dispersion: float = 5.0,
                 promotion_level_shift_fraction: float = 0.0, context_length: int = 112, horizon: int = 28,
                 val_days: int = 182, test_days: int = 182,
                 eval_stride: int = 7, train_stride: int = 7, post_peak_window: int = 14, batch_size: int = 32,
                 num_workers: int = 0, seed: int = 0, cache_dir: str | None = None, pin_memory: bool = False) -> None:
        super().__init__(context_length=context_length, horizon=horizon, val_days=val_days, test_days=test_days,
                         eval_stride=eval_stride, train_stride=train_stride, post_peak_window=post_peak_window,
                         batch_size=batch_size, num_workers=num_workers, seed=seed, cache_dir=cache_dir,
                         pin_memory=pin_memory)
        for name, value in (("num_series", num_series), ("num_days", num_days)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if num_days < context_length + val_days + test_days:
            raise ValueError(f"num_days={num_days} must be >= context_length + val_days + test_days = "
                             f"{context_length + val_days + test_days}")
        for name, value in (("promotions_per_year", promotions_per_year), ("lift_median", lift_median),
                            ("dispersion", dispersion)):
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name, value in (("level_shift_fraction", level_shift_fraction),
                            ("promotion_level_shift_fraction", promotion_level_shift_fraction)):
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        self.num_series, self.num_days = num_series, num_days
        self.generator_args = dict(num_series=num_series, num_days=num_days, seed=seed,
                                   promotions_per_year=float(promotions_per_year), lift_median=float(lift_median),
                                   level_shift_fraction=float(level_shift_fraction), dispersion=float(dispersion))
        if promotion_level_shift_fraction:  # only then, so default caches keep their fingerprint
            self.generator_args["promotion_level_shift_fraction"] = float(promotion_level_shift_fraction)
        self._arrays: dict[str, Any] | None = None

    def raw(self) -> dict[str, np.ndarray]:
        """The cached generator columns (``target``, ``mean``, ``holiday``, ``promotion``, ``lift``, ...)."""
        data = self.cached("retail-demand", generate_retail_demand, version=1, **self.generator_args)[:]
        return {k: np.asarray(v) for k, v in data.items()}

    def load_arrays(self) -> dict[str, Any]:
        if self._arrays is None:
            raw = self.raw()
            holiday, promotion = raw["holiday"].astype(bool), raw["promotion"].astype(bool)
            peak = (holiday | promotion).astype(np.float32)
            t = np.arange(self.num_days)
            calendar_holiday = np.zeros(self.num_days, dtype=bool)
            for doy, duration in HOLIDAYS:
                for start in np.flatnonzero(t % 365 == doy):
                    calendar_holiday[start:start + duration] = True
            time_features = np.concatenate([calendar_features(t % 7, t % 365),
                                            event_distance_features(calendar_holiday)], axis=1)
            series_features = np.stack([peak, holiday, promotion], axis=-1).astype(np.int8)
            self._arrays = {"target": raw["target"], "peak": peak, "series_features": series_features,
                            "time_features": time_features, "mean": raw["mean"],
                            "feature_names": ["peak", "holiday", "promotion", *TIME_FEATURE_NAMES]}
        return self._arrays
