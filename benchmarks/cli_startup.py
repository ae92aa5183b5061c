"""Start-up time of ``python -m framework`` against importing Lightning alone (fresh interpreters, interleaved).

    python benchmarks/cli_startup.py [--quick] [--repeats N] [--root DIR] [--out FILE.json]

Each repetition runs, in a fresh ``python`` process and in turn (so load on a shared machine hits all alike):
``import lightning.pytorch`` (the floor), ``python -m framework --help`` and ``python -m framework fit --config
configs/polarization/digits_ensemble.yaml --print_config``. Reported: median and min/max wall seconds per command and
the median's ratio to the Lightning import. ``--root`` points at another checkout (e.g. an export of an older commit)
to measure its CLI with the same interpreter; the config is read from that checkout.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import benchmark_parser, markdown_table, stage, write_results  # noqa: E402

CONFIG = "configs/polarization/digits_ensemble.yaml"


def commands() -> dict[str, list[str]]:
    python = sys.executable
    return {
        "import lightning.pytorch": [python, "-c", "import lightning.pytorch"],
        "python -m framework --help": [python, "-m", "framework", "--help"],
        "fit --config digits_ensemble.yaml --print_config": [python, "-m", "framework", "fit", "--config", CONFIG,
                                                              "--print_config"],
    }


def time_once(argv: list[str], root: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="fresh processes per command (median reported)")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="checkout whose framework package and configs are timed")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    root = args.root.resolve()
    cmds = commands()
    times: dict[str, list[float]] = {name: [] for name in cmds}
    with stage(f"warm-up (one run of each of {len(cmds)} commands, not counted)"):
        for argv in cmds.values():
            time_once(argv, root)
    for rep in range(repeats):
        with stage(f"repetition {rep + 1}/{repeats}"):
            for name, argv in cmds.items():
                times[name].append(time_once(argv, root))
    floor = statistics.median(times["import lightning.pytorch"])
    rows = [{"command": name, "median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
             "median_vs_lightning_import": statistics.median(t) / floor, "repeats": len(t)}
            for name, t in times.items()]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(markdown_table(rows))
    print(f"\nroot {root}; 1-min load average at the end {load:.1f}")
    write_results(args.out, name="cli_startup", rows=rows, root=str(root), raw_seconds=times, load_average=load)


if __name__ == "__main__":
    main()
