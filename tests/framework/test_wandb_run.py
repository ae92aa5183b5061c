"""An offline W&B run holds the resolved config, metrics and at least one image; a second run also succeeds."""

from __future__ import annotations

import pytest
import yaml

TOY = "tests/configs/toy_regression.yaml"


@pytest.mark.slow
def test_offline_run_directory_contents(repo_root, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    args = [
        "fit", "--config", str(repo_root / TOY),
        "--trainer.logger=framework.loggers.WandbRunLogger",
        f"--trainer.logger.save_dir={tmp_path / 'outputs'}",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_checkpointing=false",
    ]
    run_cli(*args)
    run_cli(*args)  # the second run of the same config must not trip over the first one's config.yaml
    runs = sorted((tmp_path / "outputs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, runs
    for run in runs:
        files = run / "files"
        config = yaml.safe_load((files / "config.yaml").read_text())
        assert config["model"]["class_path"] == "tests.helpers.toy_lightning.RegressionModel"
        images = list((files / "media" / "images").rglob("*.png"))
        assert images, f"no image logged under {files}"
        # Offline runs keep history and summary in the run's record log (uploaded by `wandb sync`).
        (history,) = run.glob("run-*.wandb")
        records = history.read_bytes()
        for key in (b"val/mse", b"train/loss", b"trainer/global_step"):
            assert key in records, f"metric {key!r} missing from {history}"


def test_logger_is_offline_without_credentials(tmp_path, monkeypatch):
    from framework.loggers import WandbRunLogger, wandb_is_configured

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert not wandb_is_configured()
    logger = WandbRunLogger(save_dir=str(tmp_path))
    assert logger._offline is True
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_is_configured()
    assert WandbRunLogger(save_dir=str(tmp_path))._offline is False
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert wandb_is_configured()


@pytest.mark.slow
def test_demo_config_offline_run(repo_root, run_cli, tmp_path, monkeypatch):
    """The README's demo config (shrunk) leaves config, metrics and images in its own offline run, twice."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    args = [
        "fit", "--config", str(repo_root / "configs/polarization/digits_ensemble.yaml"),
        "--trainer.max_epochs=1", "--model.init_args.num_members=3", "--data.init_args.train_subset=128",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'outputs'}", f"--trainer.default_root_dir={tmp_path}",
    ]
    run_cli(*args)
    run_cli(*args)
    runs = sorted((tmp_path / "outputs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    for run in runs:
        config = yaml.safe_load((run / "files" / "config.yaml").read_text())
        assert config["model"]["class_path"] == "framework.models.ensemble_classifier.EnsembleClassifier"
        assert list((run / "files" / "media" / "images").rglob("*.png"))
        (history,) = run.glob("run-*.wandb")
        assert b"val/majority_vote_error" in history.read_bytes()
