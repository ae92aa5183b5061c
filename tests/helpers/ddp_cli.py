"""Run ``python -m framework <subcommand>`` on 1 and on 2 CPU processes (DDP, gloo) and read back the metrics.

``RecordMetrics`` is attached with ``--trainer.callbacks+=``; after validation / test it writes the scalar
``trainer.callback_metrics`` and the number of evaluation samples this rank saw to ``<path>.rank<r>.json``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

__all__ = ["RecordMetrics", "run_cli_processes", "sweep_args"]


def _batch_size(batch) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, dict):
        return _batch_size(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)) and batch:
        first = batch[0]
        # a tuple of batched fields, or a plain list of samples (e.g. one dict per question)
        return _batch_size(first) if isinstance(first, (torch.Tensor, list, tuple)) else len(batch)
    return 0


class RecordMetrics(pl.Callback):
    def __init__(self, path: str) -> None:
        self.path = path
        self.samples = 0

    def _count(self, batch) -> None:
        self.samples += _batch_size(batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._count(batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._count(batch)

    def _write(self, trainer) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if isinstance(v, torch.Tensor) and v.numel() == 1}
        record = {"world_size": trainer.world_size, "samples": self.samples, "metrics": metrics}
        Path(f"{self.path}.rank{trainer.global_rank}.json").write_text(json.dumps(record))

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "validate":
            self._write(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        self._write(trainer)


def sweep_args(config: Path) -> list[str]:
    """The ``# sweep-args:`` overrides a shipped config carries (they shrink it to seconds)."""
    for line in config.read_text().splitlines():
        if line.startswith("# sweep-args:"):
            return shlex.split(line.removeprefix("# sweep-args:"))
    return []


def run_cli_processes(repo_root: Path, tmp_path: Path, config: Path, subcommand: str, devices: int,
                      extra: list[str] = (), timeout: float = 600) -> list[dict]:
    """Run the CLI with ``devices`` CPU processes; returns one record per rank (rank order)."""
    record = tmp_path / f"record-{devices}"
    strategy = ["--trainer.strategy=ddp"] if devices > 1 else []
    env = dict(os.environ, PYTHONPATH=str(repo_root), OMP_NUM_THREADS="1", WANDB_MODE="disabled",
               HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "framework", subcommand, "--config", str(config), *sweep_args(config),
               *extra, "--trainer.accelerator=cpu", f"--trainer.devices={devices}", *strategy,
               "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path / f'root-{devices}'}",
               "--trainer.enable_progress_bar=false",
               "--trainer.callbacks+=tests.helpers.ddp_cli.RecordMetrics", f"--trainer.callbacks.path={record}"]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(command)}\n{proc.stderr[-4000:]}"
    return [json.loads(Path(f"{record}.rank{r}.json").read_text()) for r in range(devices)]
