"""Train / prune / fine-tune over seeds: ``configs/alphapruning/digits_ensemble_prune_finetune.yaml`` as shipped
(AlphaPruning allocation) against the same run with a uniform per-layer allocation, paired by seed.

    nice -n 10 python benchmarks/alphapruning_finetune_seeds.py --seeds 1234 1235 1236 1237 1238 \\
        --out benchmarks/results/alphapruning_digits_finetune_seeds.json

For each allocation (``alpha`` = the config, ``uniform`` = ``--trainer.callbacks.init_args.allocation=uniform``) and
seed, two CLI processes: ``python -m framework fit`` (with
:class:`benchmarks.pruning_stage_accuracy.PruningStageAccuracy` attached: test accuracy just before pruning, just after
it and after fine-tuning) and ``python -m framework test --ckpt_path <the fit's checkpoint>``. Everything else is the
config's setting. Replicate ``r`` (the r-th seed) runs with ``--seed_everything seeds[r]`` and
``--model.init_args.base_seed r * base_seed_stride``: in this config the data split and shuffling follow
``data.init_args.seed`` and the members' initialisation follows ``base_seed``, not ``seed_everything`` (nothing else is
random), so a seed alone would repeat the same run; replicate 0 is exactly the shipped config (base_seed 0).

Each run's W&B run is offline (no network) under ``<runs-dir>/<allocation>_seed<S>/{fit,test}/wandb/offline-run-*``
(its ``files/metrics.jsonl`` is read back), the checkpoint under ``.../fit/<project>/<run id>/checkpoints/``; a run
whose ``run.json`` exists is not repeated (an interrupted sweep resumes). The summary: mean ± standard error over
seeds per allocation and stage, and the paired t-interval over seeds of alpha − uniform with its verdict
(``framework.metrics.intervals``). Nothing is tuned: the config's settings are the public image-classifier code's
(ε 0.2, ``alpha_mid``, Wanda layer-wide), so no validation split chooses anything; the test split is only reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.evidence import format_interval, format_mean_se, mean_se, seed_difference, verdict  # noqa: E402
from benchmarks.harness import markdown_table, write_results  # noqa: E402
from benchmarks.pruning_stage_accuracy import STAGES  # noqa: E402
from framework.atomic_files import write_json_atomic  # noqa: E402
from framework.loggers.wandb_run import read_metrics  # noqa: E402

__all__ = ["ALLOCATIONS", "gather_run", "summarise", "main"]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = "configs/alphapruning/digits_ensemble_prune_finetune.yaml"
ALLOCATIONS = ("alpha", "uniform")
#: (name in the summary, key of a PruningStageAccuracy split record)
STAGE_METRICS = (("majority_vote_accuracy", "majority_vote_accuracy"),
                 ("mean_probability_accuracy", "mean_probability_accuracy"),
                 ("mean_member_accuracy", None))
#: The CLI test run's logged errors, reported as accuracies.
TEST_ERRORS = {"majority_vote_accuracy": "majority_vote_error", "mean_probability_accuracy": "mean_probability_error",
               "mean_member_accuracy": "mean_member_error"}


def _single(paths: list[Path], what: str, where: Path) -> Path:
    if len(paths) != 1:
        raise ValueError(f"expected exactly one {what} under {where}, found {[str(p) for p in paths]}")
    return paths[0]


def _metrics_file(directory: Path) -> Path:
    return _single(sorted(directory.glob("wandb/offline-run-*/files/metrics.jsonl")), "offline W&B metrics.jsonl",
                   directory)


def _last_values(records: list[dict[str, Any]]) -> dict[str, float]:
    values: dict[str, float] = {}
    for record in records:
        values.update({k: v for k, v in record.items() if isinstance(v, (int, float)) and k not in ("step", "time")})
    return values


def gather_run(run_dir: Path) -> dict[str, Any]:
    """One run's numbers from ``<run_dir>/stages.json`` and the fit / test ``metrics.jsonl`` files.

    Returns ``{"stages": {stage: {split: {metric: accuracy}}}, "cli_test": {split: {metric: accuracy}},
    "layer_sparsity": {layer: achieved}, "achieved_sparsity": float}``; a missing stage or file raises ``ValueError``.
    """
    try:
        stages = json.loads((run_dir / "stages.json").read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{run_dir / 'stages.json'}: not a readable PruningStageAccuracy file ({error})") from None
    missing = [s for s in STAGES if s not in stages]
    if missing:
        raise ValueError(f"{run_dir / 'stages.json'} lacks stage(s) {missing} (the fit did not finish?)")
    out_stages = {}
    for stage in STAGES:
        out_stages[stage] = {}
        for split, record in stages[stage]["splits"].items():
            members = record["member_accuracy"]
            out_stages[stage][split] = {"majority_vote_accuracy": record["majority_vote_accuracy"],
                                        "mean_probability_accuracy": record["mean_probability_accuracy"],
                                        "mean_member_accuracy": sum(members) / len(members),
                                        "member_accuracy": members, "items": record["items"]}
    fit = _last_values(read_metrics(_metrics_file(run_dir / "fit")))
    prefix = "alphapruning/achieved/"
    layers = {k[len(prefix):]: v for k, v in fit.items() if k.startswith(prefix)}
    if not layers or "alphapruning/achieved_sparsity" not in fit:
        raise ValueError(f"{run_dir / 'fit'}: the metrics hold no alphapruning/achieved/* values (did it prune?)")
    test = _last_values(read_metrics(_metrics_file(run_dir / "test")))
    cli_test = {}
    for split in out_stages["after_finetuning"]:
        cli_test[split] = {name: 1.0 - test[f"{split}/{key}"] for name, key in TEST_ERRORS.items()
                           if f"{split}/{key}" in test}
        if not cli_test[split]:
            raise ValueError(f"{run_dir / 'test'}: no {split}/* errors in the test run's metrics")
    return {"stages": out_stages, "cli_test": cli_test, "layer_sparsity": layers,
            "achieved_sparsity": fit["alphapruning/achieved_sparsity"],
            "val_majority_vote_accuracy_last": 1.0 - fit["val/majority_vote_error"]
            if "val/majority_vote_error" in fit else None}


def _cells(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, dict[int, float]]]:
    """``{(stage, split, metric): {allocation: {seed: value}}}``; stage ``cli_test`` is the separate test run."""
    cells: dict[tuple[str, str, str], dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        allocation, seed = row["allocation"], int(row["seed"])
        sources = {**row["stages"], "cli_test": row["cli_test"]}
        for stage, splits in sources.items():
            for split, metrics in splits.items():
                for name, _ in STAGE_METRICS:
                    if name in metrics:
                        cells[(stage, split, name)][allocation][seed] = float(metrics[name])
    return cells


def summarise(rows: list[dict[str, Any]], *, confidence: float = 0.95) -> dict[str, Any]:
    """Mean ± SE per allocation and the paired (by seed) interval of alpha − uniform for every stage/split/metric.

    ``rows``: one per run, ``{"allocation", "seed", **gather_run(...)}``. A seed is paired only when both allocations
    have it; at least 2 paired seeds are needed for an interval. Also checks that the CLI test run reproduces the
    fitted model's after-fine-tuning accuracy (``cli_test_matches_probe``) and that both allocations share the dense
    model before pruning (``dense_identical``: the same seed trains the same dense ensemble).
    """
    seen: set[tuple[str, int]] = set()
    for row in rows:
        key = (row["allocation"], int(row["seed"]))
        if row["allocation"] not in ALLOCATIONS:
            raise ValueError(f"unknown allocation {row['allocation']!r}; expected one of {list(ALLOCATIONS)}")
        if key in seen:
            raise ValueError(f"allocation {key[0]!r} seed {key[1]} is given twice")
        seen.add(key)
    comparisons = []
    for (stage, split, metric), by_allocation in sorted(_cells(rows).items()):
        alpha, uniform = by_allocation.get("alpha", {}), by_allocation.get("uniform", {})
        seeds = sorted(set(alpha) & set(uniform))
        entry: dict[str, Any] = {"stage": stage, "split": split, "metric": metric, "paired_seeds": seeds}
        for name, values in (("alpha", alpha), ("uniform", uniform)):
            if values:
                summary = mean_se([values[s] for s in sorted(values)])
                entry[name] = {"mean": summary.mean, "se": summary.se, "n": summary.n,
                               "per_seed": {str(s): values[s] for s in sorted(values)}}
        if len(seeds) >= 2:
            interval = seed_difference([alpha[s] for s in seeds], [uniform[s] for s in seeds], confidence=confidence)
            entry["alpha_minus_uniform"] = {"estimate": interval.estimate, "low": interval.low, "high": interval.high,
                                            "confidence": interval.confidence, "method": interval.method}
            entry["verdict"] = verdict(interval, higher_is_better=True, names=("AlphaPruning", "uniform"))
        comparisons.append(entry)
    by_key = {(r["allocation"], int(r["seed"])): r for r in rows}
    probe_gap = max((abs(r["cli_test"][split][m] - r["stages"]["after_finetuning"][split][m])
                     for r in rows for split in r["cli_test"] for m in r["cli_test"][split]), default=0.0)
    dense_gap = max((abs(by_key[("alpha", s)]["stages"]["before_pruning"][split][m]
                         - by_key[("uniform", s)]["stages"]["before_pruning"][split][m])
                     for (a, s) in by_key if a == "alpha" and ("uniform", s) in by_key
                     for split in by_key[(a, s)]["stages"]["before_pruning"]
                     for m in ("majority_vote_accuracy", "mean_probability_accuracy")), default=0.0)
    layers: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for layer, value in row["layer_sparsity"].items():
            layers[row["allocation"]][layer].append(float(value))
    sparsity = {allocation: {layer: {"mean": sum(v) / len(v), "min": min(v), "max": max(v)}
                             for layer, v in sorted(per_layer.items())}
                for allocation, per_layer in layers.items()}
    return {"comparisons": comparisons, "cli_test_matches_probe": probe_gap < 1e-6,  # the logged metrics are float32
            "max_cli_test_probe_gap": probe_gap, "dense_identical": dense_gap < 1e-12,
            "max_dense_gap": dense_gap, "layer_sparsity": sparsity}


def summary_table(summary: dict[str, Any], *, split: str = "test") -> str:
    rows = []
    for entry in summary["comparisons"]:
        if entry["split"] != split or entry["stage"] == "after_finetuning":  # after_finetuning == cli_test (checked)
            continue
        row = {"stage": entry["stage"], "metric": entry["metric"]}
        for name in ("alpha", "uniform"):
            if name in entry:
                row[name] = format_mean_se(mean_se(list(entry[name]["per_seed"].values())), digits=4)
        if "alpha_minus_uniform" in entry:
            d = entry["alpha_minus_uniform"]
            row["alpha - uniform [95% paired t]"] = f"{d['estimate']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
            row["verdict"] = entry["verdict"]
        rows.append(row)
    return markdown_table(rows)


def _run(command: list[str], log: Path, env: dict[str, str]) -> None:
    start = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
    print(f"  {' '.join(command[2:4])}: {time.perf_counter() - start:.0f} s (log {log})", file=sys.stderr, flush=True)
    if code:
        raise RuntimeError(f"exit {code}: {' '.join(command)} (see {log})")


def run_one(*, config: str, allocation: str, seed: int, base_seed: int, run_dir: Path, extra: list[str],
            env: dict[str, str]) -> dict[str, Any]:
    record_path = run_dir / "run.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    common = ["--config", config, "--trainer.accelerator", "cpu", "--seed_everything", str(seed),
              "--model.init_args.base_seed", str(base_seed), "--trainer.callbacks.init_args.allocation", allocation,
              *extra]
    run_dir.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "framework", "fit", *common,
          "--trainer.logger.init_args.save_dir", str(run_dir / "fit"),
          "--trainer.callbacks+=benchmarks.pruning_stage_accuracy.PruningStageAccuracy",
          "--trainer.callbacks.init_args.path", str(run_dir / "stages.json")], run_dir / "fit.log", env)
    checkpoint = _single(sorted((run_dir / "fit").rglob("*.ckpt")), "checkpoint", run_dir / "fit")
    _run([sys.executable, "-m", "framework", "test", *common, "--trainer.logger.init_args.save_dir",
          str(run_dir / "test"), "--ckpt_path", str(checkpoint)], run_dir / "test.log", env)
    record = {"allocation": allocation, "seed": seed, "base_seed": base_seed, "checkpoint": str(checkpoint),
              **gather_run(run_dir)}
    write_json_atomic(record_path, record, indent=2)
    return record


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1234, 1235, 1236, 1237, 1238])
    parser.add_argument("--base-seed-stride", type=int, default=3,
                        help="replicate r uses --model.init_args.base_seed r*stride (3 members: disjoint member seeds)")
    parser.add_argument("--allocations", nargs="+", choices=ALLOCATIONS, default=list(ALLOCATIONS))
    parser.add_argument("--runs-dir", type=Path, default=Path("outputs/alphapruning_finetune_seeds"))
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads of each CLI process")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="further CLI arguments for every run (e.g. quick settings); must come last")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds) or len(args.seeds) < 2:
        raise SystemExit(f"--seeds must list at least 2 distinct seeds, got {args.seeds}")
    if args.base_seed_stride < 0 or args.threads < 1:
        raise SystemExit("--base-seed-stride must be >= 0 and --threads >= 1")
    if not (ROOT / args.config).is_file() and not Path(args.config).is_file():
        raise SystemExit(f"--config {args.config!r} does not exist")
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    rows = []
    for replicate, seed in enumerate(args.seeds):
        for allocation in args.allocations:
            print(f"{allocation} seed {seed} (base_seed {replicate * args.base_seed_stride})", file=sys.stderr,
                  flush=True)
            rows.append(run_one(config=args.config, allocation=allocation, seed=seed,
                                base_seed=replicate * args.base_seed_stride,
                                run_dir=args.runs_dir / f"{allocation}_seed{seed}", extra=args.extra, env=env))
    summary = summarise(rows)
    print(summary_table(summary))
    print(f"CLI test == probe after fine-tuning: {summary['cli_test_matches_probe']}; "
          f"dense model identical across allocations: {summary['dense_identical']}")
    write_results(args.out, name="alphapruning_finetune_seeds", rows=rows, summary=summary,
                  config=args.config, seeds=args.seeds, base_seed_stride=args.base_seed_stride, extra=args.extra,
                  cli_threads=args.threads)  # environment() describes this process, not the CLI runs
    return summary


if __name__ == "__main__":
    main()
