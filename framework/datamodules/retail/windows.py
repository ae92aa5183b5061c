"""Covariates and window datasets shared by the retail-demand DataModules.

A window of series ``s`` starting at day ``a`` covers ``context_length + horizon`` days. Training windows feed forking
sequences (the model decodes at every encoder step, targets ``y[t+1 .. t+H]`` for each fork ``t``); evaluation windows
are rolling forecast-creation dates (FCDs): the history is the ``context_length`` days before the FCD, the targets the
``horizon`` days from it on. Items are dicts (see :class:`ForecastWindows`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from framework.datamodules.retail.subsets import most_affected_origins, post_peak_flags

__all__ = ["ForecastWindows", "calendar_features", "event_distance_features", "evaluation_origins",
           "training_starts", "TIME_FEATURE_NAMES"]

TIME_FEATURE_NAMES = ("dow_sin", "dow_cos", "doy_sin", "doy_cos", "days_since_event", "days_to_event")
_DISTANCE_CLIP = 183


def calendar_features(day_of_week: np.ndarray, day_of_year: np.ndarray) -> np.ndarray:
    """``[T, 4]`` float32: sin/cos of the day of week (0..6) and of the day of year (0..365)."""
    dow = 2 * np.pi * np.asarray(day_of_week) / 7.0
    doy = 2 * np.pi * np.asarray(day_of_year) / 365.25
    return np.stack([np.sin(dow), np.cos(dow), np.sin(doy), np.cos(doy)], axis=1).astype(np.float32)


def event_distance_features(event: np.ndarray) -> np.ndarray:
    """``[T, 2]`` float32: days since the last and until the next calendar event, clipped at 183, scaled to [−0.5, 0.5].

    The holiday-distance "positional encoding" of MQ-Transformer (clip and scale as datasetsforecast's Favorita
    features). ``event``: ``[T]`` 0/1 flags of calendar-wide events (holidays).
    """
    event = np.asarray(event).astype(bool)
    T = len(event)
    t = np.arange(T)
    last = np.maximum.accumulate(np.where(event, t, -10 * T))
    nxt = np.minimum.accumulate(np.where(event, t, 10 * T)[::-1])[::-1]
    since = np.minimum(t - last, _DISTANCE_CLIP) / _DISTANCE_CLIP - 0.5
    until = np.minimum(nxt - t, _DISTANCE_CLIP) / _DISTANCE_CLIP - 0.5
    return np.stack([since, until], axis=1).astype(np.float32)


def training_starts(num_days_available: int, window: int, stride: int) -> np.ndarray:
    """Start days of training windows ``[a, a + window)`` inside ``[0, num_days_available)``, every ``stride`` days,
    aligned so that the last window ends exactly at ``num_days_available``."""
    last = num_days_available - window
    if last < 0:
        raise ValueError(f"the training period has {num_days_available} days, fewer than one window of "
                         f"context_length + horizon = {window} days")
    return np.arange(last, -1, -stride)[::-1].copy()


def evaluation_origins(first: int, last: int, stride: int) -> np.ndarray:
    """Forecast-creation days (first forecast day) ``first, first + stride, ... <= last``."""
    if last < first:
        return np.zeros(0, dtype=np.int64)
    return np.arange(first, last + 1, stride, dtype=np.int64)


class ForecastWindows(Dataset):
    """Windows ``[start, start + context_length + horizon)`` of several series.

    Args:
        target: ``[S, T]`` float32 demand.
        peak: ``[S, T]`` 0/1 peak-event flags (known in the future).
        series_features: ``[S, T, Cs]`` per-series known covariates (the peak flag first), any float dtype.
        time_features: ``[T, Ct]`` calendar-wide covariates.
        series, starts: ``[N]`` window index pairs.
        context_length, horizon: L and H.
        post_peak_window: W of the PPE subset.

    Item ``i`` is a dict of tensors: ``target [L+H]``, ``features [L+H, Cs+Ct]``, ``peak [L+H]`` (float 0/1),
    ``post_peak [L+H]`` bool, ``most_affected`` bool scalar (the forecast made after the context is "most
    affected"), ``loss_scale`` (mean |y| + 1 over the context: a model-independent weight for the training loss),
    ``series``, ``start``.
    """

    def __init__(self, *, target: np.ndarray, peak: np.ndarray, series_features: np.ndarray,
                 time_features: np.ndarray, series: np.ndarray, starts: np.ndarray, context_length: int,
                 horizon: int, post_peak_window: int = 14) -> None:
        self.target = torch.as_tensor(np.asarray(target, dtype=np.float32))
        self.peak = torch.as_tensor(np.asarray(peak, dtype=np.float32))
        self.post_peak = torch.as_tensor(post_peak_flags(np.asarray(peak), post_peak_window))
        self.series_features = torch.as_tensor(np.asarray(series_features))
        self.time_features = torch.as_tensor(np.asarray(time_features, dtype=np.float32))
        self.series = torch.as_tensor(np.asarray(series, dtype=np.int64))
        self.starts = torch.as_tensor(np.asarray(starts, dtype=np.int64))
        self.context_length, self.horizon = context_length, horizon
        length = context_length + horizon
        if len(self.starts) and (int(self.starts.min()) < 0 or int(self.starts.max()) + length > self.target.shape[1]):
            raise ValueError(f"windows of {length} days must lie inside the {self.target.shape[1]} available days")
        self.most_affected = torch.as_tensor(most_affected_origins(
            np.asarray(peak), np.asarray(starts) + context_length, np.asarray(series)))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s, a = int(self.series[index]), int(self.starts[index])
        b = a + self.context_length + self.horizon
        target = self.target[s, a:b]
        features = torch.cat([self.series_features[s, a:b].float(), self.time_features[a:b]], dim=-1)
        return {
            "target": target,
            "features": features,
            "peak": self.peak[s, a:b],
            "post_peak": self.post_peak[s, a:b],
            "most_affected": self.most_affected[index],
            "loss_scale": target[: self.context_length].abs().mean() + 1.0,
            "series": self.series[index],
            "start": self.starts[index],
        }
