"""Intervals for claims about differences: over seeds and over paired test items (numpy + scipy only).

:func:`mean_se` (mean ± standard error over seeds), :func:`t_interval` (Student-t interval of a mean over seeds),
:func:`seed_difference` (paired t-interval of a difference over seeds), :func:`paired_bootstrap` (percentile
bootstrap over test items of any paired statistic, via ``scipy.stats.bootstrap``; the default statistic is the mean
paired difference), :func:`spearman_interval` (bootstrap over items of Spearman's ρ) and
:func:`clopper_pearson_interval` (exact interval of a success rate). :func:`verdict` states a win only when the
interval excludes a tie.
The one implementation of these routines in the project: benchmarks (``benchmarks/evidence.py``) and evaluation
code (e.g. the Squeezed Attention needle evaluation) both use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["MeanSE", "Interval", "mean_se", "t_interval", "seed_difference", "paired_bootstrap", "spearman_interval",
           "clopper_pearson_interval", "verdict", "format_mean_se", "format_interval"]


@dataclass(frozen=True)
class MeanSE:
    """Mean and standard error (``std(ddof=1) / sqrt(n)``; ``nan`` for one value) of ``n`` values."""

    mean: float
    se: float
    n: int


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided ``confidence`` interval ``[low, high]`` from ``n`` items or seeds."""

    estimate: float
    low: float
    high: float
    confidence: float
    n: int
    method: str

    def excludes(self, value: float = 0.0) -> bool:
        return not (self.low <= value <= self.high)


def _values(name: str, values: Any, minimum: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size < minimum:
        raise ValueError(f"{name} must be a 1-D sequence of at least {minimum} numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds a non-finite value: {array.tolist()}")
    return array


def _confidence(confidence: float) -> float:
    if not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    return float(confidence)


def mean_se(values: Sequence[float]) -> MeanSE:
    """Mean ± standard error of per-seed values ``[n]`` (n >= 1)."""
    array = _values("values", values, 1)
    se = float(array.std(ddof=1) / np.sqrt(array.size)) if array.size > 1 else float("nan")
    return MeanSE(mean=float(array.mean()), se=se, n=int(array.size))


def t_interval(values: Sequence[float], *, confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean of per-seed values ``[n]`` (n >= 2): ``mean ± t_{n-1} · se``."""
    array = _values("values", values, 2)
    level = _confidence(confidence)
    summary = mean_se(array)
    half = float(stats.t.ppf(0.5 + level / 2, df=array.size - 1)) * summary.se
    return Interval(summary.mean, summary.mean - half, summary.mean + half, level, array.size, "t over seeds")


def seed_difference(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95) -> Interval:
    """Paired t-interval of ``mean(a - b)`` over seeds (``a[i]`` and ``b[i]`` share seed ``i``; n >= 2)."""
    x, y = _values("a", a, 2), _values("b", b, 2)
    if x.shape != y.shape:
        raise ValueError(f"a ({x.size} seeds) and b ({y.size} seeds) must be paired by seed")
    interval = t_interval(x - y, confidence=confidence)
    return Interval(interval.estimate, interval.low, interval.high, interval.confidence, interval.n,
                    "paired t over seeds")


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *,
                     statistic: Callable[[np.ndarray, np.ndarray], float] | None = None,
                     confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0) -> Interval:
    """Percentile bootstrap over paired test items.

    Args:
        a, b: ``[n]`` per-item scores of two systems on the same test items (n >= 2).
        statistic: ``f(a_resampled [n], b_resampled [n]) -> float``; default ``mean(a - b)``. Items are resampled
            jointly (the pairing is kept).
        n_resamples, seed: bootstrap size and generator seed (the interval is reproducible).
    """
    x, y = _values("a", a, 2), _values("b", b, 2)
    if x.shape != y.shape:
        raise ValueError(f"a ({x.size} items) and b ({y.size} items) must be paired item by item")
    level = _confidence(confidence)
    if not isinstance(n_resamples, int) or n_resamples < 100:
        raise ValueError(f"n_resamples must be an integer >= 100, got {n_resamples!r}")
    fn = statistic or (lambda u, v: float(np.mean(u - v)))

    def vectorised(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        u, v = np.moveaxis(u, axis, -1), np.moveaxis(v, axis, -1)
        flat_u, flat_v = u.reshape(-1, u.shape[-1]), v.reshape(-1, v.shape[-1])
        return np.array([fn(p, q) for p, q in zip(flat_u, flat_v)]).reshape(u.shape[:-1])

    if np.allclose(x - y, (x - y)[0]) and statistic is None:
        # scipy's bootstrap rejects a degenerate distribution; the interval of a constant difference is that constant.
        value = float((x - y)[0])
        return Interval(value, value, value, level, x.size, "paired bootstrap (constant difference)")
    result = stats.bootstrap((x, y), vectorised, paired=True, vectorized=True, confidence_level=level,
                             n_resamples=n_resamples, method="percentile", rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return Interval(float(fn(x, y)), float(low), float(high), level, x.size, "paired percentile bootstrap over items")


def spearman_interval(x: Sequence[float], y: Sequence[float], *, confidence: float = 0.95,
                      n_resamples: int = 10_000, seed: int = 0) -> Interval:
    """Spearman's ρ of paired observations ``[n]`` (n >= 4) with a percentile bootstrap interval over pairs."""
    u, v = _values("x", x, 4), _values("y", y, 4)
    if u.shape != v.shape:
        raise ValueError(f"x ({u.size}) and y ({v.size}) must be paired")

    def rho(p: np.ndarray, q: np.ndarray) -> float:
        value = stats.spearmanr(p, q).statistic
        return 0.0 if not np.isfinite(value) else float(value)  # a resample with a constant column has no ranking

    interval = paired_bootstrap(u, v, statistic=rho, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return Interval(interval.estimate, interval.low, interval.high, interval.confidence, interval.n,
                    "percentile bootstrap over pairs of Spearman's rho")


def clopper_pearson_interval(successes: int, trials: int, *, confidence: float = 0.95) -> Interval:
    """Exact (Clopper–Pearson) interval of a success rate: ``successes`` of ``trials`` independent Bernoulli items.

    The estimate is ``successes / trials``; the bounds are beta quantiles (``scipy.stats.binomtest(...)
    .proportion_ci(method="exact")``), so the coverage is at least ``confidence`` for every true rate. Rates, not %.
    """
    for name, value in (("successes", successes), ("trials", trials)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in [0, trials={trials}], got {successes}")
    level = _confidence(confidence)
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence_level=level, method="exact")
    return Interval(successes / trials, float(ci.low), float(ci.high), level, int(trials),
                    "exact binomial (Clopper-Pearson)")


def verdict(interval: Interval, *, higher_is_better: bool, tie: float = 0.0, names: tuple[str, str] = ("a", "b")
            ) -> str:
    """``"<a> better"``, ``"<b> better"`` or ``"tie (interval includes <tie>)"`` for an interval of ``a - b``."""
    if not interval.excludes(tie):
        return f"tie (interval includes {tie:g})"
    a_larger = interval.low > tie
    return f"{names[0] if a_larger == higher_is_better else names[1]} better"


def format_mean_se(summary: MeanSE, digits: int = 3) -> str:
    """``"m ± se (n=k)"`` for a table cell."""
    if summary.n == 1:
        return f"{summary.mean:.{digits}g} (n=1, no error bar)"
    return f"{summary.mean:.{digits}g} ± {summary.se:.2g} (n={summary.n})"


def format_interval(interval: Interval, digits: int = 3) -> str:
    """``"e [low, high]"`` for a table cell."""
    return f"{interval.estimate:.{digits}g} [{interval.low:.{digits}g}, {interval.high:.{digits}g}]"
