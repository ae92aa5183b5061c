"""Base of the retail-demand DataModules: train / validation / test split in time, forking training windows and
rolling forecast-creation dates, checks of the arrays a subclass provides."""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.datamodules.retail.windows import ForecastWindows, evaluation_origins, training_starts
from framework.base import FrameworkDataModule

__all__ = ["RetailWindowsDataModule", "validate_demand_arrays"]


def _require_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def validate_demand_arrays(target: np.ndarray, peak: np.ndarray, source: str = "data") -> None:
    """Clear errors for negative / non-finite demand and for peak flags that do not cover every day."""
    if target.ndim != 2:
        raise ValueError(f"{source}: demand must be [series, days], got shape {target.shape}")
    if not np.isfinite(target).all():
        bad = np.argwhere(~np.isfinite(target))[0]
        raise ValueError(f"{source}: demand must be finite; series {bad[0]} day {bad[1]} is {target[tuple(bad)]!r}")
    if (target < 0).any():
        bad = np.argwhere(target < 0)[0]
        raise ValueError(f"{source}: demand must be non-negative; series {bad[0]} day {bad[1]} has "
                         f"{float(target[tuple(bad)])!r}")
    if peak.shape != target.shape:
        raise ValueError(f"{source}: peak flags must be known for every day of every series, including the forecast "
                         f"horizon; demand has shape {target.shape} but peak flags {peak.shape}")
    peak_f = peak.astype(np.float64)
    if not np.isin(peak_f, (0.0, 1.0)).all():
        bad = np.argwhere(~np.isin(peak_f, (0.0, 1.0)))[0]
        raise ValueError(f"{source}: peak flags must be 0 or 1 (known, also in the forecast horizon); series "
                         f"{bad[0]} day {bad[1]} has {peak_f[tuple(bad)]!r}")


class RetailWindowsDataModule(FrameworkDataModule):
    """Daily demand split in time: training windows end before the validation origins, whose targets end before the
    test origins.

    Layout (``T`` days): test FCDs every ``eval_stride`` days in ``[T − test_days, T − horizon]``; validation FCDs in
    ``[T − test_days − val_days, T − test_days − horizon]``; training windows (forking sequences) lie in
    ``[0, T − test_days − val_days)``, one every ``train_stride`` days of every series.

    Subclasses implement :meth:`load_arrays` returning ``target [S, T]``, ``peak [S, T]``, ``series_features
    [S, T, Cs]`` (peak flag first), ``time_features [T, Ct]`` and ``feature_names`` (Cs + Ct names).

    Args:
        context_length: L, days of history per forecast (>= horizon).
        horizon: H, days forecast.
        val_days, test_days: length of the validation / test FCD periods.
        eval_stride: days between FCDs.
        train_stride: days between training window starts.
        post_peak_window: W of the post-peak subset.
        batch_size, num_workers, seed, cache_dir, pin_memory: see ``FrameworkDataModule``.
    """

    def __init__(self, *, context_length: int = 112, horizon: int = 28, val_days: int = 182, test_days: int = 182,
                 eval_stride: int = 7, train_stride: int = 7, post_peak_window: int = 14, batch_size: int = 32,
                 num_workers: int = 0, seed: int = 0, cache_dir: str | None = None, pin_memory: bool = False) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, cache_dir=cache_dir,
                         pin_memory=pin_memory)
        _require_int("horizon", horizon, 1)
        _require_int("context_length", context_length, 1)
        if horizon > context_length:
            raise ValueError(f"horizon={horizon} is longer than the history context_length={context_length}; the "
                             "forecasters need at least one horizon of history (MQ-CNN's default is 4 x horizon)")
        for name, value in (("val_days", val_days), ("test_days", test_days)):
            _require_int(name, value, horizon)
        for name, value in (("eval_stride", eval_stride), ("train_stride", train_stride),
                            ("post_peak_window", post_peak_window)):
            _require_int(name, value, 1)
        self.context_length, self.horizon = context_length, horizon
        self.val_days, self.test_days, self.eval_stride = val_days, test_days, eval_stride
        self.train_stride, self.post_peak_window = train_stride, post_peak_window
        self.datasets: dict[str, ForecastWindows] = {}
        self.feature_names: list[str] = []
        self._num_features: int | None = None

    # ------------------------------------------------------------------ subclass hook
    def load_arrays(self) -> dict[str, Any]:
        """The series arrays (``RetailDemand``: the generator; ``M5Sales``: the user's files). Subclasses define it."""
        raise TypeError(f"{type(self).__name__} must define load_arrays(); use framework.datamodules.retail_demand.RetailDemand "
                        "or framework.datamodules.m5_sales.M5Sales, which do")

    @property
    def num_features(self) -> int:
        """Covariates per day (the peak flag included)."""
        if self._num_features is None:
            self._num_features = len(self.load_arrays()["feature_names"])
        return self._num_features

    # ------------------------------------------------------------------ setup
    def prepare_data(self) -> None:
        self.load_arrays()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        arrays = self.load_arrays()
        target, peak = np.asarray(arrays["target"]), np.asarray(arrays["peak"])
        validate_demand_arrays(target, peak, type(self).__name__)
        S, T = target.shape
        L, H = self.context_length, self.horizon
        test_first = T - self.test_days
        val_first = test_first - self.val_days
        if val_first - L < 0:
            raise ValueError(f"{T} days cannot hold context_length={L} before val_days={self.val_days} + "
                             f"test_days={self.test_days}; shorten them or provide longer series")
        self.feature_names = list(arrays["feature_names"])
        self._num_features = len(self.feature_names)
        common = dict(target=target, peak=peak, series_features=arrays["series_features"],
                      time_features=arrays["time_features"], context_length=L, horizon=H,
                      post_peak_window=self.post_peak_window)
        starts = training_starts(val_first, L + H, self.train_stride)
        self.datasets["train"] = ForecastWindows(series=np.repeat(np.arange(S), len(starts)),
                                                 starts=np.tile(starts, S), **common)
        for name, first, last in (("val", val_first, test_first - H), ("test", test_first, T - H)):
            origins = evaluation_origins(first, last, self.eval_stride)
            self.datasets[name] = ForecastWindows(series=np.repeat(np.arange(S), len(origins)),
                                                  starts=np.tile(origins - L, S), **common)

    def train_dataloader(self):
        return self.make_dataloader(self.datasets["train"], shuffle=True, drop_last=True)

    def val_dataloader(self):
        return self.make_dataloader(self.datasets["val"], shuffle=False, batch_size=self._eval_batch())

    def test_dataloader(self):
        return self.make_dataloader(self.datasets["test"], shuffle=False, batch_size=self._eval_batch())

    def predict_dataloader(self):
        return self.test_dataloader()

    def _eval_batch(self) -> int:
        # Evaluation decodes only at the FCD, so it affords larger batches.
        return 8 * self.per_device_batch_size
