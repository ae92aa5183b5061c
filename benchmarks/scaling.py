"""Data-parallel scaling through Lightning's DDP: throughput and time-to-target-loss at 1, 2 and 4 GPUs.

    python benchmarks/scaling.py --gpus 1 2 4 --out benchmarks/results/scaling.json

For each method config below, ``python -m framework fit`` runs with ``--trainer.strategy=ddp
--trainer.devices=N`` and the *same global batch size* (the DataModules divide it by N), so every N solves the same
optimisation problem. A callback records, on rank 0, the wall time of every optimizer step after ``--skip`` warm-up
steps and the training loss; the script reports samples/s (global batch × steps / time), the speed-up over one GPU
(target: >= 1.8x on 2 GPUs, >= 3.4x on 4), and the time until the (smoothed) training loss first falls below the
target given per method. ``--quick`` shrinks the steps for a smoke run (also on CPU with ``--accelerator cpu``).

Not run yet: the 2- and 4-GPU machines were not lent when this was written (docs/results.md says so).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.harness import markdown_table, write_results  # noqa: E402
from framework.atomic_files import write_json_atomic  # noqa: E402

# (name, config, global batch size, steps, target training loss, extra overrides)
METHODS = [
    ("polarization ensemble (digits)", "configs/polarization/digits_ensemble.yaml", 256, 400, 0.05, []),
    ("S4D sequential digits", "configs/ssm/sequential_digits_s4d.yaml", 128, 400, 1.0, []),
    ("TinyMem GPT-2 (4 layers)", "configs/tinymem/train_mult_noise_4layer.yaml", 256, 400, 1.2, []),
]


class StepClock(pl.Callback):
    """Rank 0 writes ``{"times": [...], "losses": [...]}`` (seconds since the first timed step, train loss)."""

    def __init__(self, path: str, skip: int = 20) -> None:
        self.path, self.skip = path, skip
        self.start: float | None = None
        self.times: list[float] = []
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step < self.skip:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        value = float(loss.detach()) if loss is not None else float("nan")  # .item() synchronizes the step
        now = time.perf_counter()
        if self.start is None:
            self.start = now
            return
        self.times.append(now - self.start)
        self.losses.append(value)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            write_json_atomic(self.path, {"times": self.times, "losses": self.losses,
                                          "world_size": trainer.world_size}, keep_nonfinite=True)


def time_to_target(times: list[float], losses: list[float], target: float, window: int = 20) -> float | None:
    """First time the moving average (``window`` steps) of the loss is <= ``target``."""
    for i in range(window, len(losses) + 1):
        if sum(losses[i - window:i]) / window <= target:
            return times[i - 1]
    return None


def run(config: str, devices: int, batch: int, steps: int, extra: list[str], accelerator: str, out: Path) -> dict:
    clock = out / f"clock-{Path(config).stem}-{devices}.json"
    strategy = ["--trainer.strategy=ddp"] if devices > 1 else []
    command = [sys.executable, "-m", "framework", "fit", "--config", config, f"--trainer.devices={devices}",
               f"--trainer.accelerator={accelerator}", *strategy, f"--trainer.max_steps={steps}",
               "--trainer.limit_val_batches=0", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
               "--trainer.enable_progress_bar=false", f"--data.init_args.batch_size={batch}",
               "--trainer.callbacks=benchmarks.scaling.StepClock", f"--trainer.callbacks.path={clock}", *extra]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)}\n{result.stderr[-4000:]}")
    return json.loads(clock.read_text())


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--methods", type=int, nargs="+", default=None, help="indices into METHODS (default: all)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--work-dir", type=Path, default=Path("outputs/scaling"))
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    chosen = [METHODS[i] for i in args.methods] if args.methods is not None else METHODS
    for name, config, batch, steps, target, extra in chosen:
        steps = min(steps, 60) if args.quick else steps
        base = None
        for devices in args.gpus:
            clock = run(config, devices, batch, steps, extra, args.accelerator, args.work_dir)
            seconds = clock["times"][-1] if clock["times"] else float("nan")
            throughput = batch * len(clock["times"]) / seconds if seconds else float("nan")
            base = throughput if devices == args.gpus[0] else base
            reached = time_to_target(clock["times"], clock["losses"], target)
            rows.append({"method": name, "devices": devices, "global batch": batch,
                         "samples/s": round(throughput, 1), "speed-up": round(throughput / base, 2),
                         "final loss": round(clock["losses"][-1], 4) if clock["losses"] else None,
                         "s to loss target": None if reached is None else round(reached, 1), "target": target})
            print(rows[-1], flush=True)
    print(markdown_table(rows))
    write_results(args.out, name="scaling", rows=rows)


if __name__ == "__main__":
    main()
