"""Issue 19 (problems 6-7): CLI edge cases give one understandable line; DDP epoch logs are reduced at the source."""

from __future__ import annotations

import sys
import types
import warnings

import pytest
import torch

from framework.cli import cpu_cores, warn_if_devices_exceed_cores
from framework.cli_errors import condense_error

TOY = "tests/configs/toy_regression.yaml"


def _one_error_line(capsys, exit_info, *needles):
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("error:") == 1, err
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    for needle in needles:
        assert needle in line, line
    return line


def test_config_before_the_subcommand(repo_root, run_cli):
    cli = run_cli("--config", str(repo_root / TOY), "fit", "--trainer.fast_dev_run=1")
    assert cli.trainer.fast_dev_run == 1
    assert cli.model.net[0].in_features == 3  # the config's num_features, linked from the data


def test_empty_config_names_the_file(run_cli, capsys, tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", str(empty))
    line = _one_error_line(capsys, exit_info, str(empty), "empty")
    assert "Unexpected config" not in line


def test_malformed_yaml_names_the_file_and_line(repo_root, run_cli, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((repo_root / TOY).read_text().replace("  max_epochs: 2", "  max_epochs: [2"))
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", str(bad))
    line = _one_error_line(capsys, exit_info, str(bad), "not valid YAML", "line")
    assert "<unicode string>" not in line


def test_config_that_is_not_a_mapping(run_cli, capsys, tmp_path):
    listed = tmp_path / "list.yaml"
    listed.write_text("- fit\n- model\n")
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", str(listed))
    _one_error_line(capsys, exit_info, str(listed), "mapping")


def test_constructor_message_without_jsonargparse_boilerplate(repo_root, run_cli, capsys):
    """``target_sparsity=1.5`` is reported in the callback's own words only."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", str(repo_root / TOY), "--trainer.callbacks+=framework.callbacks.AlphaPruning",
                "--trainer.callbacks.init_args.target_sparsity=1.5")
    line = _one_error_line(capsys, exit_info, "target_sparsity", "1.5")
    for leak in ("Subclass types expect", "class_path entry", "Not a valid subclass", "implicit class_path"):
        assert leak not in line, line


def test_condense_error_drops_subclass_boilerplate():
    message = ("target_sparsity must lie in [0, 1), got 1.5\n  Not a valid subclass of Callback\n"
               "  Subclass types expect one of:\n  - a class path (str)\n  - a dict with class_path entry\n"
               "  - a dict without class_path but with init_args entry (class path given previously)\n"
               "  - a dict with parameters accepted by the base class (implicit class_path)")
    assert condense_error(message) == "target_sparsity must lie in [0, 1), got 1.5"


def test_devices_above_cpu_cores_warns_once(repo_root, monkeypatch, tmp_path):
    too_many = cpu_cores() + 2
    # run=False: build the Trainer (where the check lives) without starting the DDP processes.
    from framework.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["framework"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = main(["--config", str(repo_root / TOY), f"--trainer.devices={too_many}", "--trainer.strategy=ddp",
                    "--trainer.accelerator=cpu"], run=False)
    messages = [str(w.message) for w in caught if "CPU core" in str(w.message)]
    assert len(messages) == 1, messages
    assert f"devices={too_many}" in messages[0] and f"{cpu_cores()} CPU core" in messages[0]
    assert cli.trainer.num_devices == too_many


def test_devices_within_cores_or_on_gpu_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_devices_exceed_cores("cpu", 1)
        assert not warn_if_devices_exceed_cores("cpu", "auto")
        assert not warn_if_devices_exceed_cores("gpu", cpu_cores() + 8)
    with pytest.warns(UserWarning, match="CPU core"):
        assert warn_if_devices_exceed_cores("cpu", str(cpu_cores() + 1))


def test_max_steps_only_progress_bar_has_no_negative_epoch(repo_root, run_cli, monkeypatch):
    from lightning.pytorch.callbacks import ProgressBar

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    cli = run_cli("fit", "--config", str(repo_root / TOY), "--trainer.max_steps=3", "--trainer.max_epochs=null",
                  "--trainer.enable_progress_bar=true")
    (bar,) = [c for c in cli.trainer.callbacks if isinstance(c, ProgressBar)]
    description = bar._get_train_description(0)
    assert "-2" not in description and "-1" not in description, description
    assert description.strip().startswith("Epoch 0") and "max_steps 3" in description


def _recorder():
    """A stand-in for ``LightningModule.log`` capturing the keyword arguments of each call by name."""
    calls = {}

    def log(module, name, value, *args, **kwargs):
        calls[name] = kwargs

    log.calls = calls
    return log


@pytest.mark.parametrize(("training", "hook"), [(True, "on_train_epoch_end"), (False, "on_validation_epoch_end"),
                                                (False, "validation_step")])
def test_epoch_level_logs_are_reduced_under_ddp(monkeypatch, training, hook):
    """log_dict and epoch-end hooks pass ``sync_dist=True`` under DDP (the source of Lightning's 'It is recommended
    to use sync_dist=True' warnings: log_dict passed sync_dist=False, and training epoch-end hooks were skipped)."""
    import lightning.pytorch as pl

    from framework.base import FrameworkModule

    recorder = _recorder()
    monkeypatch.setattr(pl.LightningModule, "log", recorder)
    module = FrameworkModule()
    module._trainer = types.SimpleNamespace(world_size=2, training=training)
    module._current_fx_name = hook
    module.log_dict({"x/a": torch.tensor(0.5), "x/b": 0.25})
    module.log("x/c", torch.tensor(1.0))
    module.log_dict({"x/d": 1.0}, sync_dist=False)  # an explicit choice is kept
    assert recorder.calls["x/a"]["sync_dist"] is True
    assert recorder.calls["x/b"]["sync_dist"] is True
    assert recorder.calls["x/c"]["sync_dist"] is True
    assert recorder.calls["x/d"]["sync_dist"] is False


def test_training_step_logs_stay_unsynced(monkeypatch):
    import lightning.pytorch as pl

    from framework.base import FrameworkModule

    recorder = _recorder()
    monkeypatch.setattr(pl.LightningModule, "log", recorder)
    module = FrameworkModule()
    module._trainer = types.SimpleNamespace(world_size=2, training=True)
    module._current_fx_name = "training_step"
    module.log_dict({"train/loss": torch.tensor(0.5)})
    assert "sync_dist" not in recorder.calls["train/loss"]
