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


def test_offline_run_writes_readable_metrics_file(repo_root, run_cli, tmp_path, monkeypatch):
    """Issue 19 (problem 8): an offline run's metrics are readable without W&B: files/metrics.jsonl, one JSON object
    per logging call, whose last val/mse is the value the Trainer ended with."""
    import json
    import math

    from framework.loggers import read_metrics
    from framework.loggers.wandb_run import METRICS_FILENAME

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    cli = run_cli("fit", "--config", str(repo_root / TOY), "--trainer.logger=framework.loggers.WandbRunLogger",
                  f"--trainer.logger.save_dir={tmp_path / 'outputs'}", "--trainer.log_every_n_steps=1",
                  "--trainer.enable_checkpointing=false")
    (run,) = sorted((tmp_path / "outputs" / "wandb").glob("offline-run-*"))
    path = run / "files" / METRICS_FILENAME
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records == read_metrics(run)
    val = [r for r in records if "val/mse" in r]
    assert len(val) == cli.trainer.max_epochs
    assert math.isclose(val[-1]["val/mse"], float(cli.trainer.callback_metrics["val/mse"]), rel_tol=1e-6)
    train = [r for r in records if "train/loss" in r]
    assert len(train) == cli.trainer.global_step  # log_every_n_steps=1
    assert all(isinstance(r["step"], int) for r in records)


def test_read_metrics_skips_a_cut_last_line_and_names_bad_lines(tmp_path):
    from framework.loggers import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "a": 1.0}\n{"step": 1, "a"')
    assert read_metrics(path) == [{"step": 0, "a": 1.0}]
    path.write_text('{"step": 0, "a": 1.0}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(path)
