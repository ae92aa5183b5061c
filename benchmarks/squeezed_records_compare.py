"""Paired comparison of method rows between two needle-record files of ``squeezed_attention_accuracy.py``.

    python benchmarks/squeezed_records_compare.py A.jsonl B.jsonl --method sq_sinks_topk_token --budget 0.325 \
        [--method-b OTHER_ROW] [--split test] [--length 2048] [--dense-solved-only]

The two files must hold the same questions (same design options and seeds; matched by context key and question
index) scored with different index settings (e.g. ``--centroid-fraction``). Prints accuracy, mean KL and mass
recall of the row in each file on the questions both scored, and the paired bootstrap intervals of the accuracy
difference B − A and of the KL difference B − A over those questions (``framework.metrics.intervals.paired_bootstrap``). With
``--dense-solved-only`` only questions that dense attention answers (in A) are used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framework.metrics.intervals import paired_bootstrap  # noqa: E402


def load(path: Path, method: str, budget: float, split: str | None, length: int | None = None
         ) -> dict[tuple[str, int], dict]:
    """``{(context_key, question): {"row": record of method at budget, "dense": dense record, "task": ...}}``."""
    if not path.is_file():
        raise SystemExit(f"error: records file {path} does not exist")
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise SystemExit(f"error: {path}, line {number}: not JSON ({err})") from None
        if split is not None and item.get("split") != split:
            continue
        if length is not None and item.get("length") != length:
            continue
        rows = {(r["method"], round(float(r["target_budget"]), 6)): r for r in item["records"]}
        row, dense = rows.get((method, round(budget, 6))), rows.get(("dense", 1.0))
        if row is not None and dense is not None:
            out[(item["context_key"], int(item["question"]))] = {"row": row, "dense": dense, "task": item["task"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--method", required=True)
    parser.add_argument("--method-b", default=None,
                        help="the row of file B to compare (default: --method); A and B may be the same file")
    parser.add_argument("--budget", type=float, required=True)
    parser.add_argument("--split", default="test", help="split to compare ('' for all)")
    parser.add_argument("--dense-solved-only", action="store_true")
    parser.add_argument("--length", type=int, default=None, help="only contexts of this length (tokens)")
    args = parser.parse_args()
    split = args.split or None
    method_b = args.method_b or args.method
    a = load(args.a, args.method, args.budget, split, args.length)
    b = load(args.b, method_b, args.budget, split, args.length)
    keys = sorted(set(a) & set(b))
    if args.dense_solved_only:
        keys = [k for k in keys if a[k]["dense"]["correct"]]
    if len(keys) < 2:
        raise SystemExit(f"error: only {len(keys)} question(s) scored by {args.method} (A) and {method_b} (B) at "
                         f"{args.budget} in both files")
    for group, wanted in (("all", None), ("needles", {"single", "multi"}), ("qa", {"qa"})):
        ks = [k for k in keys if wanted is None or a[k]["task"] in wanted]
        if len(ks) < 2:
            continue
        acc_a = np.array([float(a[k]["row"]["correct"]) for k in ks])
        acc_b = np.array([float(b[k]["row"]["correct"]) for k in ks])
        diff = paired_bootstrap(100 * acc_b, 100 * acc_a)
        kl = [np.mean([x[k]["row"]["kl"] for k in ks]) for x in (a, b)]
        kl_diff = paired_bootstrap([b[k]["row"]["kl"] for k in ks], [a[k]["row"]["kl"] for k in ks])
        recall = [np.mean([x[k]["row"]["mass_recall"] for k in ks]) for x in (a, b)]
        budgets = [np.mean([x[k]["row"]["budget"] for k in ks]) for x in (a, b)]
        print(f"{group}: n = {len(ks)}; A {100 * acc_a.mean():.1f} % (KL {kl[0]:.3f}, mass recall {recall[0]:.3f}, "
              f"budget {budgets[0]:.3f}); B {100 * acc_b.mean():.1f} % (KL {kl[1]:.3f}, mass recall {recall[1]:.3f}, "
              f"budget {budgets[1]:.3f}); B − A {diff.estimate:+.1f} [{diff.low:+.1f}, {diff.high:+.1f}] points, "
              f"KL {kl_diff.estimate:+.4f} [{kl_diff.low:+.4f}, {kl_diff.high:+.4f}]")


if __name__ == "__main__":
    main()
