"""Resume from a checkpoint and 2-process CPU DDP through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

TOY = "tests/configs/toy_regression.yaml"


def test_resume_from_checkpoint_equals_uninterrupted_run(repo_root, run_cli, tmp_path):
    common = ["--config", str(repo_root / TOY), "--trainer.deterministic=true",
              "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
              "--trainer.callbacks.save_last=true", "--trainer.callbacks.save_top_k=0"]
    straight = run_cli("fit", *common, "--trainer.max_epochs=3", f"--trainer.default_root_dir={tmp_path / 'a'}")
    first = run_cli("fit", *common, "--trainer.max_epochs=2", f"--trainer.default_root_dir={tmp_path / 'b'}")
    (last,) = (tmp_path / "b").rglob("last.ckpt")
    resumed = run_cli("fit", *common, "--trainer.max_epochs=3", f"--trainer.default_root_dir={tmp_path / 'c'}",
                      f"--ckpt_path={last}")
    assert first.trainer.current_epoch == 2
    assert resumed.trainer.current_epoch == 3
    assert resumed.trainer.global_step == straight.trainer.global_step
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.ddp
@pytest.mark.slow
def test_two_process_ddp_splits_global_batch(repo_root, tmp_path):
    record = tmp_path / "record"
    env = dict(os.environ, PYTHONPATH=str(repo_root), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "framework", "fit", "--config", TOY,
         "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
         f"--trainer.default_root_dir={tmp_path}",
         "--trainer.callbacks+=tests.helpers.toy_lightning.RecordRun", f"--trainer.callbacks.path={record}"],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"record.rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert rank["world_size"] == 2
        assert set(rank["batch_sizes"]) <= {16}, "global batch 32 must be split into 16 per process"
    # 96 training samples, 16 per process per step, 2 epochs -> 3 steps per process per epoch.
    assert len(ranks[0]["batch_sizes"]) == len(ranks[1]["batch_sizes"]) == 6
    # metrics are synced across processes (torchmetrics state), so both ranks report the same value
    assert ranks[0]["val_mse"] == pytest.approx(ranks[1]["val_mse"])
