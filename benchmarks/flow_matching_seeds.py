"""Pool several seeds of ``benchmarks/flow_matching_paths.py`` into mean ± standard error per path, and the paired
(same seed) difference of each path's RFNE against the paper's bridge path.

    python benchmarks/flow_matching_paths.py --full --device cuda --systems navier_stokes \\
        --paths bridge stochastic_interpolant_linear --seed S --out fm_seedS.json        # S = 0, 1, 2 (one call each)
    python benchmarks/flow_matching_seeds.py fm_seed0.json fm_seed1.json fm_seed2.json --intervals 10 \\
        --out benchmarks/results/flow_matching_full_seeds.json

A difference "holds" (the bridge is better) when its mean is negative and more than two standard errors from 0;
"reversed" when positive by the same margin; otherwise "within noise". Each input is one seed (its ``--seed``); the
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
from framework.metrics.intervals import mean_se  # noqa: E402


def mean_and_standard_error(values: list[float]) -> tuple[float, float]:
    """Mean and standard error over seeds (``nan`` for one seed), via :func:`framework.metrics.intervals.mean_se`."""
    summary = mean_se(values)
    return summary.mean, summary.se


def pool(runs: dict[int, list[dict]], intervals: int) -> tuple[list[dict], list[dict]]:
    """``runs``: seed -> rows of one flow_matching_paths JSON. Returns (per-path rows, paired differences)."""
    rfne: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for seed, rows in runs.items():
        for row in rows:
            if row["intervals"] == intervals:
                rfne[(row["system"], row["path"])][seed] = float(row["rfne"])
    per_path, paired = [], []
    for (system, path), by_seed in sorted(rfne.items()):
        mean, se = mean_and_standard_error(list(by_seed.values()))
        per_path.append({"system": system, "path": path, "intervals": intervals, "seeds": len(by_seed),
                         "rfne_mean": mean, "rfne_se": se})
        bridge = rfne.get((system, "bridge"), {})
        if path == "bridge" or not bridge:
            continue
        common = sorted(set(bridge) & set(by_seed))
        if not common:
            continue
        diff_mean, diff_se = mean_and_standard_error([bridge[s] - by_seed[s] for s in common])
        verdict = ("holds" if diff_mean < 0 and abs(diff_mean) > 2 * diff_se else
                   "reversed" if diff_mean > 0 and abs(diff_mean) > 2 * diff_se else "within noise")
        paired.append({"system": system, "bridge_minus": path, "intervals": intervals, "seeds": len(common),
                       "difference_mean": diff_mean, "difference_se": diff_se,
                       "bridge_better_claim": verdict})
    return per_path, paired


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
    print(markdown_table(per_path))
    print()
    print(markdown_table(paired))
    write_results(args.out, name="flow_matching_seeds", rows=per_path, paired=paired, seeds=sorted(runs),
                  inputs=[str(p) for p in args.results])


if __name__ == "__main__":
    main()
