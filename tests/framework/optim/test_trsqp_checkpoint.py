"""Checkpoint / resume reproduces the next iterate exactly (optimizer state + the oracle's generator)."""

from __future__ import annotations

import copy
from functools import partial

import lightning.pytorch as pl
import pytest
import torch

from framework.datamodules.optimizer_iterations import OptimizerIterationsDataModule
from framework.optim.constrained_protocol import oracle_from_module
from framework.optim.line_search_sqp import AdaptiveL1SQP
from framework.optim.trsqp import TRSQP
from framework.models.constrained_test_problem import ConstrainedTestProblemModule

CONFIGS = [
    (TRSQP, dict(hessian="sr1")),
    (TRSQP, dict(hessian="averaged", hessian_window=3)),
    (TRSQP, dict(hessian="estimated", mode="second_order")),
    (AdaptiveL1SQP, dict()),
]


@pytest.mark.parametrize("cls,kwargs", CONFIGS, ids=["sr1", "averaged", "second_order", "adaptive_l1"])
def test_state_dict_resume_reproduces_the_next_iterate(cls, kwargs):
    module = ConstrainedTestProblemModule(problem="HS79", noise_variance=1e-2, noise_seed=5)
    opt = cls(module.parameters(), **kwargs)
    for _ in range(6):
        opt.step(oracle=oracle_from_module(module))
    saved_opt = copy.deepcopy(opt.state_dict())
    saved_model = copy.deepcopy(module.state_dict())
    saved_noise = module.noise.get_state().clone()
    for _ in range(2):
        opt.step(oracle=oracle_from_module(module))
    expected = module.x.detach().clone()

    fresh = ConstrainedTestProblemModule(problem="HS79", noise_variance=1e-2, noise_seed=999)
    fresh.load_state_dict(saved_model)
    fresh.noise.set_state(saved_noise)
    resumed = cls(fresh.parameters(), **kwargs)
    resumed.load_state_dict(saved_opt)
    for _ in range(2):
        resumed.step(oracle=oracle_from_module(fresh))
    assert torch.equal(fresh.x.detach(), expected)


def _trainer(tmp_path, max_steps, **kwargs):
    return pl.Trainer(max_steps=max_steps, precision="64-true", accelerator="cpu", devices=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, **kwargs)


def test_lightning_checkpoint_resume_is_exact(tmp_path):
    factory = partial(TRSQP, hessian="sr1")

    def model():
        return ConstrainedTestProblemModule(problem="HS78", noise_variance=1e-2, noise_seed=2, optimizer=factory)

    straight = model()
    _trainer(tmp_path / "a", 6, enable_checkpointing=False).fit(straight, OptimizerIterationsDataModule(iterations=50))

    first = model()
    trainer = _trainer(tmp_path / "b", 4, enable_checkpointing=False)
    trainer.fit(first, OptimizerIterationsDataModule(iterations=50))
    ckpt = tmp_path / "four.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed = model()
    trainer = _trainer(tmp_path / "c", 6, enable_checkpointing=False)
    trainer.fit(resumed, OptimizerIterationsDataModule(iterations=50), ckpt_path=ckpt)
    assert trainer.optimizers[0].trsqp_state["iteration"] == 6
    assert torch.equal(resumed.x.detach(), straight.x.detach())
    assert resumed.noise.get_state().equal(straight.noise.get_state())
