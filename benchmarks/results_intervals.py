"""Intervals for results that were reported without one, recomputed from the JSON files already in
benchmarks/results/ (issue 22: every claim states its split, its seeds and an interval). No training, seconds.

    python benchmarks/results_intervals.py [--out benchmarks/results/results_intervals.json]

* Polarization (``polarization_full.json``): the prediction targets ("MAE <= 1 point") as the mean absolute error
  over the interpolating ensembles with a 95 % percentile bootstrap over ensembles (``framework.metrics.intervals``,
  pairing kept), and "eta <= 4/3" as a count with its exact (Clopper-Pearson) interval.
* TinyMem quick runs (counts printed in docs/results.md, not stored in a JSON): the backdoor success counts with
  their exact intervals.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.evidence import clopper_pearson_interval, paired_bootstrap  # noqa: E402
from benchmarks.harness import benchmark_parser, markdown_table, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

# (what, successes, trials): backdoor successes of the TinyMem quick runs, docs/results.md "TinyMem: base training".
TINYMEM_QUICK_COUNTS = [
    ("base model, epoch 2: ASR", 37, 71),
    ("fine-tune clean / extra / both: ASR after", 0, 71),
    ("regularizer runs (60 steps, each): ASR", 0, 36),
]


def exact_rate_interval(successes: int, trials: int) -> tuple[float, float]:
    """Clopper-Pearson 95 % interval of a rate, in % (:func:`framework.metrics.intervals.clopper_pearson_interval`)."""
    interval = clopper_pearson_interval(successes, trials)
    return 100 * interval.low, 100 * interval.high


def polarization(path: Path) -> list[dict]:
    payload = json.loads(path.read_text())
    ensembles = [e for e in payload["ensembles"] if e["interpolating"]]
    law = payload.get("law_eta", 4 / 3)
    rows = []
    for split in payload["splits"]:
        eta = [e["splits"][split]["eta"] for e in ensembles]
        polarized = sum(v <= law + 1e-12 for v in eta)
        low, high = exact_rate_interval(polarized, len(eta))
        rows.append({"split": split, "claim": f"eta <= {law:.4g}", "ensembles": len(eta),
                     "estimate": f"{polarized}/{len(eta)}", "low_95": f"{low:.1f} %", "high_95": f"{high:.1f} %",
                     "verdict": "(a count)"})
        for m in ("5", "10", "20"):
            actual = np.array([e["splits"][split]["prediction"][m]["actual"] for e in ensembles]) * 100
            for kind in ("law_first3", "measured_first3"):
                predicted = np.array([e["splits"][split]["prediction"][m][kind] for e in ensembles]) * 100
                interval = paired_bootstrap(predicted, actual, statistic=lambda a, b: float(np.mean(np.abs(a - b))))
                verdict = ("met" if interval.high <= 1 else "missed" if interval.low > 1 else "undecided")
                rows.append({"split": split, "claim": f"M={m} {kind}: MAE <= 1 point", "ensembles": interval.n,
                             "estimate": f"{interval.estimate:.2f}", "low_95": f"{interval.low:.2f}",
                             "high_95": f"{interval.high:.2f}", "verdict": verdict})
    return rows


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    polar = polarization(RESULTS / "polarization_full.json")
    print("Polarization (polarization_full.json; 95 % bootstrap over interpolating ensembles, exact for counts):")
    print(markdown_table(polar))
    tinymem = []
    for what, k, n in TINYMEM_QUICK_COUNTS:
        low, high = exact_rate_interval(k, n)
        tinymem.append({"run": what, "successes": f"{k}/{n}", "rate": f"{100 * k / n:.1f} %",
                        "low_95": f"{low:.1f} %", "high_95": f"{high:.1f} %"})
    print("\nTinyMem quick runs (exact 95 % intervals of the backdoor success rate):")
    print(markdown_table(tinymem))
    write_results(args.out, name="results_intervals", rows=[], polarization=polar, tinymem_quick=tinymem)


if __name__ == "__main__":
    main()
