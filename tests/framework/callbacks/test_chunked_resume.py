"""A long fit run in short chunks equals one uninterrupted fit: parameters, optimizer state and callback states are
bit-identical (CPU), through the real CLI with ``--ckpt_path`` (docs/framework.md, "Runs across short GPU slots")."""

from __future__ import annotations

import shlex

import pytest
import torch

from framework.callbacks.epoch_time_limit import EpochBoundaryTimeLimit
from framework.callbacks.rng_state import capture_rng_state, restore_rng_state


def _sweep_args(config) -> list[str]:
    for line in config.read_text().splitlines():
        if line.startswith("# sweep-args:"):
            return shlex.split(line.removeprefix("# sweep-args:"))
    raise AssertionError(f"{config} has no sweep-args line")


def _listops_args(repo_root, tmp_path, *, dropout: float, steps: int) -> list[str]:
    config = repo_root / "configs/ssm/listops_s4d.yaml"
    # 16 training trees in batches of 4: 4 steps per epoch; dropout > 0 so the global RNG matters.
    return ["fit", "--config", str(config), *_sweep_args(config), "--data.init_args.batch_size=4",
            f"--model.init_args.dropout={dropout}", f"--trainer.max_steps={steps}",
            "--trainer.val_check_interval=4", "--trainer.enable_progress_bar=false",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.init_args.save_dir={tmp_path}",
            f"--model.init_args.scheduler.init_args.total_steps={steps}",
            "--model.init_args.scheduler.init_args.warmup_steps=3"]


def _chunk_args(path, seconds: float, rng: bool) -> list[str]:
    args = ["--trainer.callbacks+=framework.callbacks.epoch_time_limit.EpochBoundaryTimeLimit",
            f"--trainer.callbacks.seconds={seconds}", f"--trainer.callbacks.checkpoint_path={path}"]
    if rng:
        args.append("--trainer.callbacks+=framework.callbacks.rng_state.RNGStateCheckpoint")
    return args


def _state(path) -> dict:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint


def _differing_leaves(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b), key=str)
        return [d for k in keys for d in _differing_leaves(a.get(k), b.get(k), f"{prefix}/{k}")]
    return [] if a == b else [f"{prefix}: {a!r} != {b!r}"]


def _assert_same_training_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"]
    assert a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for pid, slots in opt_a["state"].items():
            for name, value in slots.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b["state"][pid][name])), (pid, name)
    assert a["lr_schedulers"] == b["lr_schedulers"]
    # Progress counters, and the logger's step, continue as in one run.
    assert _differing_leaves(a["loops"], b["loops"]) == []
    sobolev = [k for k in a["callbacks"] if "SobolevFilter" in k]
    assert sobolev, "the ListOps config's learned-β callback should be checkpointed"
    for key in sobolev:
        assert repr(a["callbacks"][key]) == repr(b["callbacks"][key])


@pytest.mark.slow
@pytest.mark.parametrize("chunks", [2, 3])
def test_listops_chunks_equal_one_run(run_cli, repo_root, tmp_path, chunks):
    steps = 12  # 3 epochs of 4 steps
    whole = tmp_path / "whole.ckpt"
    run_cli(*_listops_args(repo_root, tmp_path / "whole", dropout=0.2, steps=steps),
            *_chunk_args(whole, 1e6, rng=True))
    previous = None
    for index in range(chunks):
        path = tmp_path / f"chunk{index}.ckpt"
        # A budget of ~0 s stops after every epoch (the next one never fits); the last chunk gets enough time.
        seconds = 1e6 if index == chunks - 1 else 1e-6
        resume = [f"--ckpt_path={previous}"] if previous else []
        cli = run_cli(*_listops_args(repo_root, tmp_path / f"chunk{index}", dropout=0.2, steps=steps),
                      *_chunk_args(path, seconds, rng=True), *resume)
        limit = next(c for c in cli.trainer.callbacks if isinstance(c, EpochBoundaryTimeLimit))
        assert limit.stopped_early == (index < chunks - 1)
        previous = path
    assert _state(previous)["global_step"] == steps
    _assert_same_training_state(_state(whole), _state(previous))


@pytest.mark.slow
def test_without_rng_state_the_resumed_run_differs(run_cli, repo_root, tmp_path):
    """The negative control: dropout draws from the global RNG, so without RNGStateCheckpoint the chunks diverge
    (this is what makes the test above able to fail)."""
    steps = 8
    whole, first, second = tmp_path / "whole.ckpt", tmp_path / "first.ckpt", tmp_path / "second.ckpt"
    run_cli(*_listops_args(repo_root, tmp_path / "w", dropout=0.2, steps=steps), *_chunk_args(whole, 1e6, rng=False))
    run_cli(*_listops_args(repo_root, tmp_path / "a", dropout=0.2, steps=steps), *_chunk_args(first, 1e-6, rng=False))
    run_cli(*_listops_args(repo_root, tmp_path / "b", dropout=0.2, steps=steps), *_chunk_args(second, 1e6, rng=False),
            f"--ckpt_path={first}")
    a, b = _state(whole), _state(second)
    assert a["global_step"] == b["global_step"] == steps
    assert any(not torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    state = capture_rng_state()
    torch.save({"rng": state}, tmp_path / "s.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]
    with pytest.raises(ValueError, match="lacks"):
        restore_rng_state({"python": state["python"]})


@pytest.mark.parametrize("kwargs, match", [({"seconds": 0, "checkpoint_path": "x.ckpt"}, "seconds"),
                                           ({"seconds": 5, "checkpoint_path": ""}, "checkpoint_path"),
                                           ({"seconds": 5, "checkpoint_path": "x", "safety": 0.5}, "safety")])
def test_time_limit_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EpochBoundaryTimeLimit(**kwargs)
