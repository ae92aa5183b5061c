"""SPADE targets over seeds with error bars: merge per-seed JSONs of ``benchmarks/spade.py`` (e.g. the ``--full`` runs,
one device call per seed and model group) and state each target with mean ± standard error over seeds.

    python benchmarks/spade_seeds.py benchmarks/results/spade_full_s*_h200.json [--out FILE.json]

Per seed, the target ratios (SPADE / MQ-CNN PPE P50 wQL, ...) and biases are computed from that seed's rows only;
then mean ± SE over seeds and a t-interval (``benchmarks/evidence.py``). A target is "met" / "missed" when the 95 %
interval lies on one side of its threshold, otherwise "undecided (interval contains the threshold)". Nothing is
tuned in the SPADE benchmark (every model uses the note's settings), so there is no validation split.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.evidence import mean_se, t_interval  # noqa: E402
from benchmarks.harness import benchmark_parser, markdown_table, write_results  # noqa: E402

# (target, value of one seed from {model: row}, threshold, "<=" or ">=" or "abs<=")
TARGETS = [
    ("SPADE most-affected P50 bias within ±10 %", lambda m: m["SPADE"]["bias50_most_affected"], 0.10, "abs<="),
    ("MQ-CNN most-affected P50 bias >= +20 %", lambda m: m["MQ-CNN"]["bias50_most_affected"], 0.20, ">="),
    ("SPADE PPE P50 wQL <= 0.95 x MQ-CNN",
     lambda m: m["SPADE"]["wql50_post_peak"] / m["MQ-CNN"]["wql50_post_peak"], 0.95, "<="),
    ("SPADE PPE P50 wQL <= MQ-Transformer",
     lambda m: m["SPADE"]["wql50_post_peak"] / m["MQ-Transformer"]["wql50_post_peak"], 1.0, "<="),
    ("SPADE PE P50 wQL <= 1.02 x MQ-CNN", lambda m: m["SPADE"]["wql50_peak"] / m["MQ-CNN"]["wql50_peak"], 1.02, "<="),
]


def load_rows(paths: list[Path]) -> dict[int, dict[str, dict]]:
    """``{seed: {model: row}}`` from the files; a (seed, model) pair given twice is an error."""
    by_seed: dict[int, dict[str, dict]] = {}
    for path in paths:
        try:
            rows = json.loads(path.read_text())["rows"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a readable benchmarks/spade.py JSON with rows ({err})") from None
        for row in rows:
            models = by_seed.setdefault(int(row["seed"]), {})
            if row["model"] in models:
                raise ValueError(f"{path}: seed {row['seed']} of {row['model']} is given twice")
            models[row["model"]] = row
    return by_seed


def summarise(by_seed: dict[int, dict[str, dict]]) -> list[dict]:
    complete = sorted(s for s, m in by_seed.items() if {"SPADE", "MQ-CNN", "MQ-Transformer"} <= set(m))
    if not complete:
        raise ValueError(f"no seed has all three models (seeds and models: "
                         f"{ {s: sorted(m) for s, m in by_seed.items()} })")
    out = []
    for name, value, threshold, kind in TARGETS:
        values = np.array([value(by_seed[s]) for s in complete])
        summary = mean_se(values)
        if summary.n >= 2:
            interval = t_interval(values)
            low, high = interval.low, interval.high
        else:
            low = high = summary.mean
        if kind == "abs<=":
            low, high = (min(abs(low), abs(high)) if low * high > 0 else 0.0), max(abs(low), abs(high))
            point_ok, sure_ok, sure_bad = abs(summary.mean) <= threshold, high <= threshold, low > threshold
        elif kind == "<=":
            point_ok, sure_ok, sure_bad = summary.mean <= threshold, high <= threshold, low > threshold
        else:
            point_ok, sure_ok, sure_bad = summary.mean >= threshold, low >= threshold, high < threshold
        if summary.n < 2:
            verdict = f"{'met' if point_ok else 'missed'} (one seed, no interval)"
        else:
            verdict = "met" if sure_ok else ("missed" if sure_bad else "undecided (interval contains the threshold)")
        out.append({"target": name, "seeds": complete, "mean": summary.mean, "se": summary.se,
                    "ci95_low": low, "ci95_high": high, "threshold": threshold, "verdict": verdict,
                    "per_seed": values.tolist()})
    return out


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args()
    try:
        rows = summarise(load_rows(args.files))
    except ValueError as err:
        parser.error(str(err))
    print(markdown_table(rows, ["target", "seeds", "mean", "se", "ci95_low", "ci95_high", "threshold", "verdict"]))
    write_results(args.out, name="spade_seeds", rows=rows, files=[str(p) for p in args.files])


if __name__ == "__main__":
    main()
