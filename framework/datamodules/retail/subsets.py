"""Peak-event (PE), post-peak-event (PPE) and "most affected" subsets of forecast targets (note §1.6).

* PE targets: days whose (known) peak flag is 1.
* PPE targets: days 1..W after a PE ends that are not PE days themselves (W = 14 daily steps by default; the paper's
  exact window is not public, this one is ours).
* Most affected: forecasts whose creation date falls within 7 days after a PE end — the last PE day ``e`` before the
  first forecast day ``f`` has ``1 <= f - e <= 7``, so the peak sits in the last week of the history — restricted to
  PPE targets.
"""

from __future__ import annotations

import numpy as np

__all__ = ["days_since_peak", "post_peak_flags", "most_affected_origins"]


def days_since_peak(peak: np.ndarray) -> np.ndarray:
    """``[S, T]`` int64: ``t − e``, ``e`` the last PE day ``<= t`` (0 on PE days; a large number before the first PE).

    Args:
        peak: ``[S, T]`` (or ``[T]``) 0/1 flags.
    """
    peak = np.asarray(peak).astype(bool)
    t = np.arange(peak.shape[-1])
    last = np.where(peak, t, -1)
    last = np.maximum.accumulate(last, axis=-1)
    return np.where(last >= 0, t - last, np.iinfo(np.int32).max).astype(np.int64)


def post_peak_flags(peak: np.ndarray, window: int = 14) -> np.ndarray:
    """``[S, T]`` bool: day is 1..``window`` days after the last PE day and not a PE day itself."""
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"post-peak window must be a positive integer number of steps, got {window!r}")
    since = days_since_peak(peak)
    return (since >= 1) & (since <= window)


def most_affected_origins(peak: np.ndarray, first_forecast_day: np.ndarray, series: np.ndarray,
                          recent_days: int = 7) -> np.ndarray:
    """``[N]`` bool: the last PE day ``e`` before the origin ``f`` (first forecast day) has ``1 <= f − e <= recent_days``.

    Args:
        peak: ``[S, T]`` flags; first_forecast_day, series: ``[N]`` indices of the forecasts.
    """
    since = days_since_peak(peak)
    f = np.asarray(first_forecast_day)
    gap = since[np.asarray(series), f - 1] + 1  # distance from the last PE day to f
    return (gap >= 1) & (gap <= recent_days)
