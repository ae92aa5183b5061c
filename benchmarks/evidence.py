"""Evidence a reviewer accepts, shared by every ``benchmarks/<name>.py`` script (numpy + scipy only).

Two parts:

* **Intervals.** :func:`mean_se` (mean ± standard error over seeds), :func:`seed_difference` (paired t-interval of a
  difference over seeds), :func:`paired_bootstrap` (percentile bootstrap over test items of any paired statistic,
  via ``scipy.stats.bootstrap``; the default statistic is the mean paired difference) and :func:`spearman_interval`
  (bootstrap over items of Spearman's ρ). :func:`verdict` states a win only when the interval excludes a tie.
* **Selection protocol.** :class:`SelectionProtocol` chooses each tuned knob (hyper-parameter, epoch count,
  threshold) on a validation split disjoint from the test split, records which split chose what, and lets the test
  split be scored once per knob, after the choice. Its :meth:`SelectionProtocol.to_json` goes into the benchmark's
  JSON, :meth:`SelectionProtocol.markdown` under its table.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "MeanSE",
    "Interval",
    "mean_se",
    "seed_difference",
    "paired_bootstrap",
    "spearman_interval",
    "verdict",
    "format_mean_se",
    "format_interval",
    "require_disjoint",
    "Selection",
    "SelectionProtocol",
]


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


def seed_difference(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95) -> Interval:
    """Paired t-interval of ``mean(a - b)`` over seeds (``a[i]`` and ``b[i]`` share seed ``i``; n >= 2)."""
    x, y = _values("a", a, 2), _values("b", b, 2)
    if x.shape != y.shape:
        raise ValueError(f"a ({x.size} seeds) and b ({y.size} seeds) must be paired by seed")
    level = _confidence(confidence)
    diff = x - y
    summary = mean_se(diff)
    half = float(stats.t.ppf(0.5 + level / 2, df=diff.size - 1)) * summary.se
    return Interval(summary.mean, summary.mean - half, summary.mean + half, level, diff.size, "paired t over seeds")


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


def require_disjoint(validation: Iterable[Hashable], test: Iterable[Hashable], *, what: str = "items") -> None:
    """Raise ``ValueError`` when the validation and test splits share an item (id, index, hash)."""
    shared = set(validation) & set(test)
    if shared:
        sample = sorted(map(str, shared))[:5]
        raise ValueError(f"validation and test {what} overlap in {len(shared)} item(s), e.g. {sample}: a setting "
                         "chosen on validation would be reported on data it was chosen on")


@dataclass
class Selection:
    """One tuned knob: the candidates, their validation scores, the choice, and its single test score."""

    knob: str
    candidates: list[Any]
    validation_scores: list[float]
    chosen: Any
    selection_split: str
    report_split: str
    criterion: str
    higher_is_better: bool
    test_score: float | None = None
    paper_value: Any = None
    note: str = ""


@dataclass
class SelectionProtocol:
    """Choose on validation, report once on test, and record which split chose what.

    Usage::

        protocol = SelectionProtocol(validation_split="poisoned prompts 0-119", test_split="prompts 120-240")
        best = protocol.select("alpha", [0.05, 0.5, 0.75], score_on_validation, criterion="...",
                               higher_is_better=True, paper_value=0.05)
        protocol.report("alpha", score_on_test(best))
    """

    validation_split: str
    test_split: str
    selections: dict[str, Selection] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.validation_split or not self.test_split or self.validation_split == self.test_split:
            raise ValueError(f"validation_split {self.validation_split!r} and test_split {self.test_split!r} must be "
                             "two different, named splits")

    def select(self, knob: str, candidates: Sequence[Any], score: Callable[[Any], float], *, criterion: str,
               higher_is_better: bool, paper_value: Any = None, note: str = "") -> Any:
        """Score every candidate with ``score`` (which must use the validation split only) and return the best;
        ties go to the earlier candidate."""
        if knob in self.selections:
            raise ValueError(f"knob {knob!r} was already selected; a second selection would reuse the test split")
        candidates = list(candidates)
        if not candidates:
            raise ValueError(f"knob {knob!r} needs at least one candidate")
        scores = [float(score(c)) for c in candidates]
        finite = [i for i, s in enumerate(scores) if np.isfinite(s)]
        if not finite:
            raise ValueError(f"knob {knob!r}: no candidate has a finite validation score ({scores})")
        key = (lambda i: -scores[i]) if higher_is_better else (lambda i: scores[i])
        chosen = candidates[min(finite, key=key)]
        self.selections[knob] = Selection(knob, candidates, scores, chosen, self.validation_split, self.test_split,
                                          criterion, higher_is_better, paper_value=paper_value, note=note)
        return chosen

    def record(self, knob: str, *, candidates: Sequence[Any], validation_scores: Sequence[float], chosen: Any,
               criterion: str, higher_is_better: bool, paper_value: Any = None, note: str = "") -> None:
        """Record a selection whose validation scores were computed elsewhere (e.g. inside a training loop)."""
        if knob in self.selections:
            raise ValueError(f"knob {knob!r} was already selected")
        if chosen not in list(candidates) or len(candidates) != len(validation_scores):
            raise ValueError(f"knob {knob!r}: chosen {chosen!r} must be one of the {len(candidates)} candidates, "
                             f"each with one validation score ({len(validation_scores)} given)")
        self.selections[knob] = Selection(knob, list(candidates), [float(s) for s in validation_scores], chosen,
                                          self.validation_split, self.test_split, criterion, higher_is_better,
                                          paper_value=paper_value, note=note)

    def report(self, knob: str, test_score: float) -> None:
        """Record the single test-split score of the chosen setting of ``knob``."""
        if knob not in self.selections:
            raise ValueError(f"knob {knob!r} has not been selected on validation; its test score cannot be reported")
        if self.selections[knob].test_score is not None:
            raise ValueError(f"knob {knob!r} already has its test score: the test split is scored once")
        self.selections[knob].test_score = float(test_score)

    def to_json(self) -> dict[str, Any]:
        return {"validation_split": self.validation_split, "test_split": self.test_split,
                "selections": [asdict(s) for s in self.selections.values()]}

    def markdown(self) -> str:
        """A table: knob, candidates, chosen, paper value, chosen on, reported on, criterion."""
        if not self.selections:
            return "(no setting was selected)"
        lines = ["| knob | candidates (validation score) | chosen | paper | chosen on | reported on | criterion |",
                 "|---|---|---|---|---|---|---|"]
        for s in self.selections.values():
            scored = ", ".join(f"{c} ({v:.4g})" for c, v in zip(s.candidates, s.validation_scores))
            lines.append(f"| {s.knob} | {scored} | {s.chosen} | {'' if s.paper_value is None else s.paper_value} | "
                         f"{s.selection_split} | {s.report_split} | {s.criterion} |")
        return "\n".join(lines)
