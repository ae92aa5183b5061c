"""Start-up time of ``python -m framework`` against importing Lightning alone (fresh interpreters, interleaved).

    python benchmarks/cli_startup.py [--quick] [--repeats N] [--baseline DIR] [--out FILE.json]

Each repetition runs, in a fresh ``python`` process and in turn (so load on a shared machine hits all alike):
``import lightning.pytorch`` (the floor), ``python -m framework --help`` and ``python -m framework fit --config
configs/polarization/digits_ensemble.yaml --print_config``; with ``--baseline DIR`` (another checkout, e.g.
``git archive <commit> | tar -x -C DIR``) its two CLI commands are timed too, interleaved with this checkout's.
Reported per command: median wall seconds and median CPU seconds (user + system of the child, far less sensitive to
other processes on a shared machine than wall time), min / max wall, and each median's ratio to the Lightning
import's.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import benchmark_parser, markdown_table, stage, write_results  # noqa: E402

CONFIG = "configs/polarization/digits_ensemble.yaml"


def commands(root: Path, baseline: Path | None) -> dict[str, tuple[list[str], Path]]:
    python = sys.executable
    cli = {"python -m framework --help": [python, "-m", "framework", "--help"],
           "fit --config digits_ensemble.yaml --print_config": [python, "-m", "framework", "fit", "--config", CONFIG,
                                                                 "--print_config"]}
    out = {"import lightning.pytorch": ([python, "-c", "import lightning.pytorch"], root)}
    for name, argv in cli.items():
        if baseline is not None:
            out[f"{name} [baseline]"] = (argv, baseline)
        out[name] = (argv, root)
    return out


def time_once(argv: list[str], root: Path) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one fresh process run from ``root``."""
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="fresh processes per command (median reported)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout whose CLI is timed beside this one's (e.g. an export of an older commit)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted runs of each command first (disk cache)")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    root = Path(__file__).resolve().parents[1]
    cmds = commands(root, args.baseline.resolve() if args.baseline else None)
    wall: dict[str, list[float]] = {name: [] for name in cmds}
    cpu: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(args.warmup):
        with stage(f"warm-up (one run of each of {len(cmds)} commands, not counted)"):
            for argv, where in cmds.values():
                time_once(argv, where)
    for rep in range(repeats):
        with stage(f"repetition {rep + 1}/{repeats}"):
            for name, (argv, where) in cmds.items():
                w, c = time_once(argv, where)
                wall[name].append(w)
                cpu[name].append(c)
    floor_wall = statistics.median(wall["import lightning.pytorch"])
    floor_cpu = statistics.median(cpu["import lightning.pytorch"])
    rows = [{"command": name, "median_wall_s": statistics.median(wall[name]), "median_cpu_s": statistics.median(cpu[name]),
             "min_wall_s": min(wall[name]), "max_wall_s": max(wall[name]),
             "wall_vs_lightning": statistics.median(wall[name]) / floor_wall,
             "cpu_vs_lightning": statistics.median(cpu[name]) / floor_cpu, "repeats": len(wall[name])}
            for name in cmds]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(markdown_table(rows))
    print(f"\nroot {root}; baseline {args.baseline}; 1-min load average at the end {load:.1f}")
    write_results(args.out, name="cli_startup", rows=rows, baseline=str(args.baseline), raw_wall_seconds=wall,
                  raw_cpu_seconds=cpu, load_average=load)


if __name__ == "__main__":
    main()
