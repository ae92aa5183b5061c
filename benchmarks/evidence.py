"""Evidence a reviewer accepts, shared by every ``benchmarks/<name>.py`` script (numpy + scipy only).

Two parts:

* **Intervals**, re-exported from :mod:`framework.metrics.intervals` (their one implementation): :func:`mean_se`,
  :func:`t_interval`, :func:`seed_difference`, :func:`paired_bootstrap`, :func:`spearman_interval`,
  :func:`clopper_pearson_interval`, :func:`verdict` and formatters.
* **Selection protocol.** :class:`SelectionProtocol` chooses each tuned knob (hyper-parameter, epoch count,
  threshold) on a validation split disjoint from the test split, records which split chose what, and lets the test
  split be scored once per knob, after the choice. Its :meth:`SelectionProtocol.to_json` goes into the benchmark's
  JSON, :meth:`SelectionProtocol.markdown` under its table.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framework.metrics.intervals import (  # noqa: E402
    Interval,
    MeanSE,
    clopper_pearson_interval,
    format_interval,
    format_mean_se,
    mean_se,
    paired_bootstrap,
    seed_difference,
    spearman_interval,
    t_interval,
    verdict,
)

__all__ = [
    "MeanSE",
    "Interval",
    "mean_se",
    "t_interval",
    "seed_difference",
    "paired_bootstrap",
    "spearman_interval",
    "clopper_pearson_interval",
    "verdict",
    "format_mean_se",
    "format_interval",
    "require_disjoint",
    "Selection",
    "SelectionProtocol",
]


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
