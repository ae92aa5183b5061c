"""Pool several seeds of ``benchmarks/flow_matching_paths.py`` into mean ± standard error per path, and the paired
(same seed) difference of each path's RFNE against the paper's bridge path.

    python benchmarks/flow_matching_paths.py --full --device cuda --systems navier_stokes \\
        --paths bridge stochastic_interpolant_linear --seed S --out fm_seedS.json        # S = 0, 1, 2 (one call each)
    python benchmarks/flow_matching_seeds.py fm_seed0.json fm_seed1.json fm_seed2.json --intervals 10 \\
        --out benchmarks/results/flow_matching_full_seeds.json

A difference "holds" (the bridge is better) when its 95 % paired t-interval over seeds lies below 0; "reversed"
when it lies above 0; otherwise "within noise". Measures: the test rollout RFNE at ``--intervals`` and the mean
validation RFNE over training checkpoints (the convergence claim). Each input is one seed (its ``--seed``); the
same seed may not appear twice.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import markdown_table, write_results  # noqa: E402
from framework.metrics.intervals import mean_se, seed_difference, t_interval  # noqa: E402


def mean_and_standard_error(values: list[float]) -> tuple[float, float]:
    """Mean and standard error over seeds (``nan`` for one seed), via :func:`framework.metrics.intervals.mean_se`."""
    summary = mean_se(values)
    return summary.mean, summary.se


MEASURES = {"rfne": "test rollout RFNE at the chosen interval count",
            "val_rfne_mean": "mean validation RFNE over training checkpoints (the convergence claim)"}


def pool(runs: dict[int, list[dict]], intervals: int) -> tuple[list[dict], list[dict]]:
    """``runs``: seed -> rows of one flow_matching_paths JSON. Returns (per-path rows, paired differences).

    For each measure in ``MEASURES`` present in the rows: mean ± standard error per path over seeds, and for every
    path the paired (same seed) difference bridge − path with a 95 % paired t-interval over seeds. The verdict on
    "the bridge is better" is "holds" when the interval lies below 0, "reversed" above 0, else "within noise".
    """
    values: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    for seed, rows in runs.items():
        for row in rows:
            if row["intervals"] != intervals:
                continue
            for measure in MEASURES:
                if row.get(measure) is not None:
                    values[(measure, row["system"], row["path"])][seed] = float(row[measure])
    per_path, paired = [], []
    for (measure, system, path), by_seed in sorted(values.items()):
        mean, se = mean_and_standard_error(list(by_seed.values()))
        per_path.append({"measure": measure, "system": system, "path": path, "intervals": intervals,
                         "seeds": len(by_seed), "mean": mean, "se": se})
        bridge = values.get((measure, system, "bridge"), {})
        if path == "bridge" or not bridge:
            continue
        common = sorted(set(bridge) & set(by_seed))
        if len(common) < 2:
            continue
        diff = seed_difference([bridge[s] for s in common], [by_seed[s] for s in common])
        verdict = "holds" if diff.high < 0 else "reversed" if diff.low > 0 else "within noise"
        paired.append({"measure": measure, "system": system, "bridge_minus": path, "intervals": intervals,
                       "seeds": len(common), "difference_mean": diff.estimate,
                       "difference_se": mean_and_standard_error([bridge[s] - by_seed[s] for s in common])[1],
                       "difference_ci95": [diff.low, diff.high], "bridge_better_claim": verdict})
    return per_path, paired


def few_step(runs: dict[int, list[dict]], path: str = "bridge", steps: tuple[int, ...] = (5, 10),
             reference: int = 50, tolerance: float = 1.05) -> list[dict]:
    """The few-step claim: RFNE at ``steps`` solver intervals over RFNE at ``reference``, per system, with a 95 %
    t-interval over seeds; "holds" when the interval lies below ``tolerance`` (within 5 % of the many-step error)."""
    ratios: dict[tuple[str, int], list[float]] = defaultdict(list)
    for rows in runs.values():
        by = {(r["system"], r["intervals"]): float(r["rfne"]) for r in rows if r["path"] == path}
        for (system, intervals), value in by.items():
            if intervals in steps and (system, reference) in by:
                ratios[(system, intervals)].append(value / by[(system, reference)])
    out = []
    for (system, intervals), values in sorted(ratios.items()):
        if len(values) < 2:
            continue
        interval = t_interval(values)
        out.append({"system": system, "path": path, "intervals": intervals, "versus": reference, "seeds": len(values),
                    "ratio_mean": interval.estimate, "ratio_ci95": [interval.low, interval.high],
                    "within_5_percent": "holds" if interval.high <= tolerance else
                    "fails" if interval.low > tolerance else "undecided"})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="flow_matching_paths.py JSON files, one per seed")
    parser.add_argument("--intervals", type=int, default=10, help="solver intervals the RFNE is read at")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    runs: dict[int, list[dict]] = {}
    for path in args.results:
        if not path.is_file():
            parser.error(f"{path} is not a file")
        payload = json.loads(path.read_text())
        if payload.get("benchmark") != "flow_matching_paths" or "rows" not in payload:
            parser.error(f"{path} is not a flow_matching_paths.py result (benchmark={payload.get('benchmark')!r})")
        command = payload.get("environment", {}).get("command", "")
        tokens = command.split()
        seed = int(tokens[tokens.index("--seed") + 1]) if "--seed" in tokens else 0
        if seed in runs:
            parser.error(f"seed {seed} appears twice ({path})")
        runs[seed] = payload["rows"]
    per_path, paired = pool(runs, args.intervals)
    steps = few_step(runs)
    print(markdown_table(per_path))
    print()
    print(markdown_table(paired))
    print()
    print(markdown_table(steps))
    write_results(args.out, name="flow_matching_seeds", rows=per_path, paired=paired, few_step=steps,
                  seeds=sorted(runs),
                  inputs=[str(p) for p in args.results])


if __name__ == "__main__":
    main()
