"""``predict`` saves its outputs in a documented format and writes nothing into the working directory (issue 19,
problem 5)."""

from __future__ import annotations

import json

import pytest
import torch

from framework.base.prediction_writer import join_batches

TOY = "tests/configs/toy_regression.yaml"


def _only(paths):
    paths = list(paths)
    assert len(paths) == 1, paths
    return paths[0]


def test_predict_writes_predictions_and_nothing_into_the_working_directory(repo_root, run_cli, tmp_path):
    fit = run_cli("fit", "--config", str(repo_root / TOY), "--trainer.max_epochs=1",
                  "--trainer.callbacks+=framework.checkpoints.LastStateCheckpoint",
                  f"--trainer.callbacks.dirpath={tmp_path / 'ckpt'}")
    before = {p.name for p in tmp_path.iterdir()}
    cli = run_cli("predict", "--config", str(repo_root / TOY), "--trainer.logger=false",
                  f"--ckpt_path={tmp_path / 'ckpt' / 'last.ckpt'}")
    created = {p.name for p in tmp_path.iterdir()} - before
    assert created <= {"outputs"}, f"predict wrote {created} into the working directory"
    saved_file = _only((tmp_path / "outputs" / "predictions").glob("RegressionModel-*/predictions.pt"))
    saved = torch.load(saved_file, weights_only=True)
    assert saved["format"] == 1 and saved["model_class"] == "tests.helpers.toy_lightning.RegressionModel"
    assert saved["ckpt_path"] == str(tmp_path / "ckpt" / "last.ckpt")
    # Independent reference: the fitted weights applied to the predict inputs.
    x = cli.datamodule.val_set.tensors[0]
    with torch.no_grad():
        expected = fit.model(x)
    torch.testing.assert_close(saved["predictions"], expected)
    manifest = json.loads((saved_file.parent / "manifest.json").read_text())
    assert manifest["entries"] == [{"key": "predictions", "shape": [32], "dtype": "float32", "batch_dim": 0}]
    # The toy config has no logger: fit's and predict's configs both land under outputs/run_configs/.
    assert len(list((tmp_path / "outputs" / "run_configs").glob("config-*.yaml"))) == 2


def test_join_batches_finds_the_batch_dimension():
    members, classes = 4, 3
    outputs = [{"member_logits": torch.randn(members, n, classes), "vote": torch.arange(n), "scalar": torch.tensor(1.0)}
               for n in (4, 4, 2)]
    joined = join_batches(outputs, [4, 4, 2])
    torch.testing.assert_close(joined["member_logits"], torch.cat([o["member_logits"] for o in outputs], dim=1))
    torch.testing.assert_close(joined["vote"], torch.cat([o["vote"] for o in outputs]))
    assert isinstance(joined["scalar"], list) and len(joined["scalar"]) == 3


def test_predict_without_predict_data_is_one_error(repo_root, run_cli, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli("predict", "--config", str(repo_root / "configs/trsqp/logistic_trsqp.yaml"), "--trainer.logger=false")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "has no predict_step" in err and "Traceback" not in err


def test_framework_model_without_predict_step_is_one_error(repo_root, run_cli, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli("predict", "--config", str(repo_root / "configs/cgm_gm/sfba_synthetic.yaml"), "--trainer.logger=false",
                "--data.init_args.num_records=60")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "CGMGM has no predict_step" in err and "Traceback" not in err
