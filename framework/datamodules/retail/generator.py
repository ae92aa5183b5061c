"""Synthetic daily retail demand with peak events (PEs) that reproduces the post-peak "carry-over" failure.

Recipe of the research note (``docs/spade.md``, note §1.7), per series ``s`` and day ``t``:

* level: ``log base ~ N(log 20, 1)``, a log random walk (σ = 0.01 / day), a weekly profile
  ``Dirichlet(20·1)·7`` and a yearly sinusoid of amplitude ``U(0.1, 0.3)`` (random phase);
* unflagged permanent level shifts in 30 % of the series (``× U(1.5, 3)`` from a random day on);
* PEs: global holidays on day-of-year 190 (2 days), 330 (4 days), 355 (7 days) for every series, and item
  promotions ``Poisson(4 / year)`` lasting 1–7 days; each event has a lift ``L ~ LogNormal(log 3, 0.5)``;
* after each PE (not flagged): a ramp-down ``1 + (L − 1)·exp(−k/τ)``, ``τ ~ U(1, 4)`` days, times a stock-piling dip
  ``1 − d·exp(−k/10)``, ``d ~ U(0, 0.3)``, for k = 1..21 days;
* observations ``NegBin(mean μ, r = 5)``.

PE flags (holiday or promotion) are known covariates, also in the future; the post-peak effects are not flagged.

``promotion_level_shift_fraction`` (ours, default 0 = the note's recipe) makes that share of promotions start a
lasting level change (``× U(1.3, 2)`` from the promotion's first day on), so "the spike is the new level" is
sometimes right — the ambiguity behind the post-peak carry-over of learned forecasters.
"""

from __future__ import annotations

import numpy as np

__all__ = ["HOLIDAYS", "generate_retail_demand"]

# (day of year, duration in days) of the global holidays.
HOLIDAYS: tuple[tuple[int, int], ...] = ((190, 2), (330, 4), (355, 7))


def _negative_binomial(rng: np.random.Generator, mean: np.ndarray, dispersion: float) -> np.ndarray:
    # numpy parametrises NegBin by (n, p) with mean n(1-p)/p; p = r / (r + μ) gives mean μ, variance μ + μ²/r.
    p = dispersion / (dispersion + mean)
    return rng.negative_binomial(dispersion, p).astype(np.float32)


def generate_retail_demand(
    *,
    num_series: int,
    num_days: int,
    seed: int,
    base_level: float = 20.0,
    base_log_std: float = 1.0,
    random_walk_std: float = 0.01,
    level_shift_fraction: float = 0.3,
    promotions_per_year: float = 4.0,
    lift_median: float = 3.0,
    lift_log_std: float = 0.5,
    post_peak_days: int = 21,
    dispersion: float = 5.0,
    start_day_of_year: int = 0,
    promotion_level_shift_fraction: float = 0.0,
) -> dict[str, np.ndarray]:
    """Simulate ``num_series`` daily series of ``num_days`` days.

    Returns:
        Columns with first dimension ``S = num_series``: ``target [S, T]`` float32 counts, ``mean [S, T]`` float32
        (the NegBin mean μ, for oracle forecasts), ``holiday [S, T]`` and ``promotion [S, T]`` int8 flags (a PE day
        is ``holiday | promotion``), ``lift [S, T]`` float32 (the PE multiplier on PE days, 1 elsewhere) and
        ``level_shift_day [S]`` int64 (−1: no shift).
    """
    rng = np.random.default_rng(seed)
    S, T = num_series, num_days
    t = np.arange(T)
    day_of_year = (start_day_of_year + t) % 365

    log_level = rng.normal(np.log(base_level), base_log_std, S)[:, None] + np.cumsum(
        rng.normal(0.0, random_walk_std, (S, T)), axis=1)
    weekly = rng.dirichlet(np.full(7, 20.0), S) * 7.0                            # [S, 7], mean 1
    amplitude = rng.uniform(0.1, 0.3, S)[:, None]
    phase = rng.uniform(0.0, 2 * np.pi, S)[:, None]
    yearly = 1.0 + amplitude * np.sin(2 * np.pi * day_of_year[None, :] / 365.0 + phase)
    baseline = np.exp(log_level) * weekly[:, t % 7] * yearly

    shifted = rng.random(S) < level_shift_fraction
    shift_day = np.where(shifted, rng.integers(1, T, S), -1)
    shift_factor = rng.uniform(1.5, 3.0, S)
    baseline *= np.where((shift_day[:, None] >= 0) & (t[None, :] >= shift_day[:, None]), shift_factor[:, None], 1.0)

    holiday = np.zeros((S, T), dtype=bool)
    for doy, duration in HOLIDAYS:
        for start in np.flatnonzero(day_of_year == doy):
            holiday[:, start:start + duration] = True
    promotion = np.zeros((S, T), dtype=bool)
    lift = np.ones((S, T))
    post = np.ones((S, T))
    k = np.arange(1, post_peak_days + 1)
    for s in range(S):
        events = []  # (start, end inclusive)
        flags = holiday[s]
        starts = np.flatnonzero(flags & ~np.concatenate([[False], flags[:-1]]))
        ends = np.flatnonzero(flags & ~np.concatenate([flags[1:], [False]]))
        events += list(zip(starts, ends))
        num_promotions = rng.poisson(promotions_per_year * T / 365.0)
        for start in rng.integers(0, T, num_promotions):
            end = min(T - 1, start + int(rng.integers(1, 8)) - 1)
            promotion[s, start:end + 1] = True
            events.append((int(start), end))
            # Drawn only when enabled, so the default keeps the note's random stream.
            if promotion_level_shift_fraction > 0 and rng.random() < promotion_level_shift_fraction:
                baseline[s, start:] *= rng.uniform(1.3, 2.0)
        for start, end in events:
            event_lift = float(np.exp(rng.normal(np.log(lift_median), lift_log_std)))
            lift[s, start:end + 1] = np.maximum(lift[s, start:end + 1], event_lift)
            tau = rng.uniform(1.0, 4.0)
            dip = rng.uniform(0.0, 0.3)
            after = (1.0 + (event_lift - 1.0) * np.exp(-k / tau)) * (1.0 - dip * np.exp(-k / 10.0))
            days = end + k
            keep = days < T
            post[s, days[keep]] *= after[keep]
    peak = holiday | promotion
    # On PE days the event lift replaces the after-effects of earlier events.
    mean = baseline * np.where(peak, lift, post)
    target = _negative_binomial(rng, mean, dispersion)
    return {
        "target": target,
        "mean": mean.astype(np.float32),
        "holiday": holiday.astype(np.int8),
        "promotion": promotion.astype(np.int8),
        "lift": np.where(peak, lift, 1.0).astype(np.float32),
        "level_shift_day": shift_day.astype(np.int64),
    }
