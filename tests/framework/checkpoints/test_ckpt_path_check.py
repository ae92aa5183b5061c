"""``--ckpt_path`` is checked before anything is built or logged: one ``error:`` line naming the file, exit status 2
(issue 19, problems 2 and 3)."""

from __future__ import annotations

import os

import pytest
import torch

from framework.checkpoints import CheckpointError, check_checkpoint

TOY = "tests/configs/toy_regression.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    """A real last.ckpt of the toy model, written through the CLI."""
    import sys

    from framework.cli import main

    root = tmp_path_factory.mktemp("good")
    cwd, argv = os.getcwd(), sys.argv
    try:
        os.chdir(root)
        sys.argv = ["framework"]
        main(["fit", "--config", os.path.join(os.path.dirname(__file__), "..", "..", "..", TOY),
              "--trainer.max_epochs=1", "--trainer.callbacks+=framework.checkpoints.LastStateCheckpoint",
              f"--trainer.callbacks.dirpath={root}"])
    finally:
        os.chdir(cwd)
        sys.argv = argv
    return root / "last.ckpt"


def _bad_files(tmp_path, good):
    data = good.read_bytes()
    files = {}
    files["missing"] = tmp_path / "no" / "such.ckpt"
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    files["truncated"] = tmp_path / "truncated.ckpt"
    garbled = bytearray(data)
    garbled[: len(garbled) // 2] = os.urandom(len(garbled) // 2)
    (tmp_path / "garbled.ckpt").write_bytes(bytes(garbled))
    files["garbled"] = tmp_path / "garbled.ckpt"
    (tmp_path / "text.ckpt").write_text("ÿ not a checkpoint at all\n" * 20, encoding="latin-1")
    files["text"] = tmp_path / "text.ckpt"
    (tmp_path / "empty.ckpt").write_bytes(b"")
    files["empty"] = tmp_path / "empty.ckpt"
    (tmp_path / "folder.ckpt").mkdir()
    files["directory"] = tmp_path / "folder.ckpt"
    torch.save({"weight": torch.zeros(3)}, tmp_path / "plain_state_dict.pt")
    files["not_lightning"] = tmp_path / "plain_state_dict.pt"
    foreign = torch.load(good, map_location="cpu", weights_only=False)
    foreign["framework_run"]["model_class"] = "framework.models.ensemble_classifier.EnsembleClassifier"
    foreign["hyper_parameters"]["_class_path"] = "framework.models.ensemble_classifier.EnsembleClassifier"
    torch.save(foreign, tmp_path / "other_model.ckpt")
    files["other_model"] = tmp_path / "other_model.ckpt"
    return files


CASES = {
    "missing": "does not exist",
    "truncated": "not a PyTorch checkpoint",
    "garbled": "corrupt or truncated",
    "text": "not a PyTorch checkpoint",
    "empty": "empty",
    "directory": "is a directory",
    "not_lightning": "not a Lightning checkpoint",
    "other_model": "EnsembleClassifier",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_check_checkpoint_names_file_and_problem(case, tmp_path, good_checkpoint):
    path = _bad_files(tmp_path, good_checkpoint)[case]
    with pytest.raises(CheckpointError) as info:
        check_checkpoint(path, expected_model_class="tests.helpers.toy_lightning.RegressionModel")
    assert str(path) in str(info.value)
    assert CASES[case] in str(info.value)


def test_good_checkpoint_passes(good_checkpoint):
    summary = check_checkpoint(good_checkpoint, expected_model_class="tests.helpers.toy_lightning.RegressionModel")
    assert summary.model_class == "tests.helpers.toy_lightning.RegressionModel"
    assert (summary.epoch, summary.global_step) == (0, 3)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_checkpoint(tmp_path, good_checkpoint):
    path = tmp_path / "locked.ckpt"
    path.write_bytes(good_checkpoint.read_bytes())
    path.chmod(0)
    with pytest.raises(CheckpointError, match="not readable"):
        check_checkpoint(path)


# Every case with `test`; the other subcommands share the same check and get three of the cases.
CLI_CASES = [(case, "test") for case in sorted(CASES)] + [
    (case, sub) for sub in SUBCOMMANDS if sub != "test" for case in ("missing", "truncated", "other_model")]


@pytest.mark.parametrize(("case", "subcommand"), CLI_CASES)
def test_cli_reports_bad_checkpoint_in_one_line_before_any_run(case, subcommand, repo_root, run_cli, capsys,
                                                                tmp_path, good_checkpoint, monkeypatch):
    (tmp_path / "files").mkdir()
    path = _bad_files(tmp_path / "files", good_checkpoint)[case]
    monkeypatch.setenv("WANDB_MODE", "offline")  # a run directory would appear if a W&B run were started
    with pytest.raises(SystemExit) as exit_info:
        run_cli(subcommand, "--config", str(repo_root / TOY), "--trainer.logger=framework.loggers.WandbRunLogger",
                f"--trainer.logger.save_dir={tmp_path / 'outputs'}", f"--ckpt_path={path}")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and str(path) in err and CASES[case] in err
    assert "Traceback" not in err
    assert not list((tmp_path / "outputs").rglob("*run-*")), "no W&B run may be created"


def test_issue_command_other_method_checkpoint_for_mq_cnn(repo_root, run_cli, capsys, tmp_path):
    """The issue's case: a digits-ensemble checkpoint given to the MQ-CNN config is refused, naming both classes."""
    ckpt = tmp_path / "ensemble-last.ckpt"
    torch.save({"state_dict": {"members.0.weight": torch.zeros(2)}, "pytorch-lightning_version": "2.6.6",
                "epoch": 0, "global_step": 1,
                "hyper_parameters": {"_class_path": "framework.models.ensemble_classifier.EnsembleClassifier"}}, ckpt)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("test", "--config", str(repo_root / "configs/spade/retail_mq_cnn.yaml"), "--trainer.logger=false",
                f"--ckpt_path={ckpt}")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "EnsembleClassifier" in err and "MQCNN" in err.replace("MQ-CNN", "MQCNN") and str(ckpt) in err


def test_cli_resume_keeps_checkpoint_aliases(repo_root, run_cli, tmp_path):
    # "last" is resolved by Lightning from the checkpoint callback, not a file: it must pass the check.
    cli = run_cli("fit", "--config", str(repo_root / TOY), "--trainer.max_epochs=1", "--ckpt_path=last",
                  f"--trainer.default_root_dir={tmp_path}")
    assert cli.trainer.current_epoch == 1
