"""The ``python -m framework`` CLI: subcommands, --print_config, overrides, seeds, links and bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from framework.cli_errors import condense_error

TOY = "tests/configs/toy_regression.yaml"


def _config(repo_root):
    return str(repo_root / TOY)


def test_help_lists_subcommands(repo_root):
    out = subprocess.run(
        [sys.executable, "-m", "framework", "--help"], cwd=repo_root, capture_output=True, text=True, check=True
    ).stdout
    for sub in ("fit", "validate", "test", "predict"):
        assert sub in out


def test_print_config_has_full_class_paths(repo_root, capsys, run_cli):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", _config(repo_root), "--print_config")
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: tests.helpers.toy_lightning.RegressionModel" in printed
    assert "class_path: torch.optim.Adam" in printed
    assert "seed_everything: 7" in printed


def test_fit_then_test_and_predict(repo_root, run_cli, tmp_path):
    cli = run_cli("fit", "--config", _config(repo_root), "--trainer.default_root_dir", str(tmp_path))
    assert cli.trainer.current_epoch == 2
    assert torch.isfinite(cli.trainer.callback_metrics["val/mse"])
    cli = run_cli("test", "--config", _config(repo_root), "--trainer.default_root_dir", str(tmp_path))
    assert "test/mse" in cli.trainer.callback_metrics
    cli = run_cli("validate", "--config", _config(repo_root), "--trainer.default_root_dir", str(tmp_path))
    assert "val/mse" in cli.trainer.callback_metrics


def test_override_and_link_from_data(repo_root, run_cli):
    cli = run_cli("fit", "--config", _config(repo_root), "--trainer.fast_dev_run=1", "--data.init_args.num_features=5",
                  "--model.init_args.hidden=6")
    first = cli.model.net[0]
    assert first.in_features == 5, "num_features must be linked from the data to the model"
    assert first.out_features == 6


def test_default_seed_is_fixed(repo_root, run_cli):
    from framework.cli import DEFAULT_SEED

    weights = []
    for _ in range(2):
        cli = run_cli("fit", "--config", _config(repo_root), "--seed_everything", str(DEFAULT_SEED),
                      "--trainer.fast_dev_run=1")
        weights.append(cli.model.net[0].weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1])


def test_optimizer_is_injected_by_class_path(repo_root, run_cli):
    cli = run_cli("fit", "--config", _config(repo_root), "--trainer.fast_dev_run=1",
                  "--model.init_args.optimizer=torch.optim.SGD", "--model.init_args.optimizer.lr=0.5")
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["lr"] == 0.5


def test_missing_optimizer_is_a_clear_error(repo_root, run_cli):
    with pytest.raises(Exception, match="model.init_args.optimizer"):
        run_cli("fit", "--config", _config(repo_root), "--trainer.fast_dev_run=1", "--model.init_args.optimizer=null")


BAD_INPUTS = [
    (["--model.init_args.no_such_arg=1"], "no_such_arg"),
    (["--data.init_args.no_such_arg=1"], "no_such_arg"),
    (["--model.init_args.hidden=abc"], "hidden"),
    (["--model.init_args.hidden=-4"], "hidden"),
    (["--data.init_args.batch_size=0"], "batch_size"),
    (["--data.init_args.batch_size=-8"], "batch_size"),
    (["--model", "no.such.Model"], "no.such.Model"),
    (["--model", "NoSuchModelName"], "NoSuchModelName"),
    (["--trainer.no_such_flag=3"], "no_such_flag"),
    (["--trainer.max_epochs=-2"], "max_epochs"),
    (["--data.init_args.num_workers=-1"], "num_workers"),
    (["--model.init_args.optimizer.lr=-0.1"], "-0.1"),
    (["--data.init_args.cache_dir", "/dev/null/x", "--trainer.fast_dev_run=1"], None),  # checked separately below
]


@pytest.mark.parametrize(("extra", "needle"), [b for b in BAD_INPUTS if b[1] is not None], ids=lambda v: str(v))
def test_bad_input_is_one_clear_error(repo_root, run_cli, capsys, extra, needle):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", _config(repo_root), *extra)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err
    assert err.count("error:") == 1


def test_missing_config_file(run_cli, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", "no/such/config.yaml")
    assert exit_info.value.code == 2
    assert "no/such/config.yaml" in capsys.readouterr().err


def test_unknown_config_key_in_yaml(repo_root, run_cli, capsys, tmp_path):
    text = (repo_root / TOY).read_text().replace("    hidden: 8", "    hidden: 8\n    hiden: 3")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(SystemExit):
        run_cli("fit", "--config", str(bad))
    assert "hiden" in capsys.readouterr().err


def test_module_entry_point_reports_bad_input_without_traceback(repo_root):
    proc = subprocess.run(
        [sys.executable, "-m", "framework", "fit", "--config", TOY, "--model.init_args.no_such_arg=1"],
        cwd=repo_root, capture_output=True, text=True,
    )
    assert proc.returncode != 0
    assert "no_such_arg" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_condense_error_drops_union_noise():
    message = (
        'Parser key "model":\n  Does not validate against any of the Union subtypes\n  Subtypes: [A, NoneType]\n'
        "  Errors:\n    - Problem with given class_path 'x.Y':\n        Option 'zz' is not accepted\n"
        "    - Expected a <class 'NoneType'>\n  Given value type: <class 'str'>\n  Given value: 3"
    )
    assert condense_error(message) == "Parser key \"model\": Problem with given class_path 'x.Y': Option 'zz' is not accepted"
