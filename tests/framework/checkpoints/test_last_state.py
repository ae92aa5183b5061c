"""``last.ckpt`` is the latest state whatever ``monitor`` is, also after an interruption (issue 19, problem 1)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
import yaml

TOY = "tests/configs/toy_regression.yaml"
REPO_ROOT = Path(__file__).resolve().parents[3]
STEPS_PER_EPOCH = 3  # toy data: 96 training rows, batch size 32


def _shipped_last_checkpoint_classes() -> list[str]:
    """Class paths of the checkpoint callbacks that keep a last.ckpt in the shipped configs."""
    classes = set()
    for path in sorted((REPO_ROOT / "configs").rglob("*.yaml")):
        trainer = (yaml.safe_load(path.read_text()) or {}).get("trainer") or {}
        callbacks = trainer.get("callbacks") or []
        for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
            if isinstance(callback, dict) and (callback.get("init_args") or {}).get("save_last"):
                classes.add(callback["class_path"])
    return sorted(classes)


def _checkpoint_args(callback_class: str, dirpath: Path) -> list[str]:
    # mode=max on a falling MSE: the first epoch stays the "best" one, the worst case for Lightning's save_last.
    return [f"--trainer.callbacks+={callback_class}", "--trainer.callbacks.monitor=val/mse",
            "--trainer.callbacks.mode=max", "--trainer.callbacks.save_last=true", f"--trainer.callbacks.dirpath={dirpath}"]


def test_shipped_configs_keep_last_checkpoint_with_the_project_callback():
    assert _shipped_last_checkpoint_classes() == ["framework.checkpoints.LastStateCheckpoint"]


@pytest.mark.parametrize("callback_class", _shipped_last_checkpoint_classes())
def test_resume_with_monitor_and_save_last_equals_uninterrupted_run(callback_class, repo_root, run_cli, tmp_path):
    common = ["--config", str(repo_root / TOY), "--trainer.deterministic=true"]
    straight = run_cli("fit", *common, *_checkpoint_args(callback_class, tmp_path / "a"), "--trainer.max_epochs=4")
    run_cli("fit", *common, *_checkpoint_args(callback_class, tmp_path / "b"), "--trainer.max_epochs=2")
    last = tmp_path / "b" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert (saved["epoch"], saved["global_step"]) == (1, 2 * STEPS_PER_EPOCH), "last.ckpt must be the final epoch"
    resumed = run_cli("fit", *common, *_checkpoint_args(callback_class, tmp_path / "c"), "--trainer.max_epochs=4",
                      f"--ckpt_path={last}")
    assert resumed.trainer.global_step == straight.trainer.global_step == 4 * STEPS_PER_EPOCH
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")
    # The best (top-1) file is still Lightning's: the first epoch under mode=max.
    assert [p.name for p in (tmp_path / "b").glob("epoch=*.ckpt")] == ["epoch=0-step=3.ckpt"]


@pytest.mark.parametrize("callback_class", _shipped_last_checkpoint_classes())
def test_interrupted_run_writes_last_checkpoint_at_the_interruption(callback_class, repo_root, run_cli, tmp_path):
    handler = signal.getsignal(signal.SIGINT)  # Lightning ignores SIGINT after a KeyboardInterrupt
    try:
        with pytest.raises(SystemExit):
            run_cli("fit", "--config", str(repo_root / TOY), *_checkpoint_args(callback_class, tmp_path),
                    "--trainer.max_epochs=4", "--trainer.callbacks+=tests.helpers.toy_lightning.InterruptAtStep",
                    "--trainer.callbacks.step=5")
    finally:
        signal.signal(signal.SIGINT, handler)
    saved = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 5


@pytest.mark.parametrize("callback_class", _shipped_last_checkpoint_classes())
def test_last_checkpoint_records_model_class(callback_class, repo_root, run_cli, tmp_path):
    run_cli("fit", "--config", str(repo_root / TOY), *_checkpoint_args(callback_class, tmp_path),
            "--trainer.max_epochs=1")
    saved = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["framework_run"]["model_class"] == "tests.helpers.toy_lightning.RegressionModel"


def test_save_last_false_is_refused():
    from framework.checkpoints import LastStateCheckpoint

    with pytest.raises(ValueError, match="save_last"):
        LastStateCheckpoint(save_last=False)


@pytest.mark.parametrize("callback_class", _shipped_last_checkpoint_classes())
def test_resumed_fit_continues_the_checkpoints_wandb_run(callback_class, repo_root, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    common = ["--config", str(repo_root / TOY), "--trainer.logger=framework.loggers.WandbRunLogger",
              f"--trainer.logger.save_dir={tmp_path / 'outputs'}", *_checkpoint_args(callback_class, tmp_path / "ckpt")]
    first = run_cli("fit", *common, "--trainer.max_epochs=1")
    run_id = first.trainer.logger.version
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["framework_run"]["wandb_run_id"] == run_id
    resumed = run_cli("fit", *common, "--trainer.max_epochs=2", f"--ckpt_path={tmp_path / 'ckpt' / 'last.ckpt'}")
    assert resumed.trainer.logger.version == run_id
    # Both offline run folders carry the same run id, so `wandb sync` uploads them into one run.
    assert len(list((tmp_path / "outputs" / "wandb").glob(f"offline-run-*-{run_id}"))) == 2
    # A config that names its own run keeps it.
    other = run_cli("fit", *common, "--trainer.max_epochs=2", "--trainer.logger.id=myrun",
                    f"--ckpt_path={tmp_path / 'ckpt' / 'last.ckpt'}")
    assert other.trainer.logger.version == "myrun"
