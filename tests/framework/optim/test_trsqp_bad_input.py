"""Bad input gets a clear, early error naming the value."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from framework.optim.constrained_protocol import ConstrainedOracle, constrained_training_step, oracle_from_module
from framework.optim.line_search_sqp import AdaptiveL1SQP
from framework.optim.trsqp import TRSQP


def params():
    return [nn.Parameter(torch.zeros(3, dtype=torch.float64))]


@pytest.mark.parametrize("cls", [TRSQP, AdaptiveL1SQP])
def test_non_float_parameters_are_rejected(cls):
    with pytest.raises(ValueError, match="floating-point"):
        cls([torch.zeros(3, dtype=torch.long)])


def test_mixed_dtypes_are_rejected():
    with pytest.raises(ValueError, match="one dtype"):
        TRSQP([nn.Parameter(torch.zeros(2, dtype=torch.float32)), nn.Parameter(torch.zeros(2, dtype=torch.float64))])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(radius=0.0), "radius must be a positive number, got 0.0"),
        (dict(radius=-1.0), "radius must be a positive number, got -1.0"),
        (dict(max_radius=-2.0), "max_radius must be a positive number"),
        (dict(radius=5.0, max_radius=1.0), "max_radius must be >= radius"),
        (dict(radius_factor=1.0), "radius_factor must be a number > 1"),
        (dict(ratio_threshold=1.5), r"ratio_threshold must lie in \(0.0, 1.0\)"),
        (dict(criticality_threshold=0.0), "criticality_threshold must be a positive number"),
        (dict(penalty_growth=0.9), "penalty_growth must be a number > 1"),
        (dict(mode="third_order"), "mode must be one of"),
        (dict(hessian="bfgs"), "hessian must be one of"),
        (dict(max_samples=0), "max_samples must be a positive integer"),
        (dict(on_rank_deficient="ignore"), "on_rank_deficient must be one of"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TRSQP(params(), **kwargs)


def test_baseline_bad_settings():
    with pytest.raises(ValueError, match="step_size_max must be a positive number"):
        AdaptiveL1SQP(params(), step_size_max=0.0)
    with pytest.raises(ValueError, match="factor must be a number > 1"):
        AdaptiveL1SQP(params(), factor=1.0)


def test_dense_hessian_options_refuse_huge_models():
    with pytest.raises(ValueError, match="dense_hessian_limit"):
        TRSQP([nn.Parameter(torch.zeros(50, dtype=torch.float64))], hessian="sr1", dense_hessian_limit=10)


def test_step_without_oracle_explains_the_protocol():
    opt = TRSQP(params())
    with pytest.raises(TypeError, match="oracle"):
        opt.step()
    with pytest.raises(TypeError, match="ConstrainedOracle"):
        opt.step(oracle=lambda: 0)


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3, dtype=torch.float64))


def test_module_without_the_protocol_is_named():
    with pytest.raises(TypeError, match=r"Plain does not implement .* constraints\(\), objective\(\)"):
        oracle_from_module(Plain())
    module = Plain()
    module.automatic_optimization = False
    with pytest.raises(TypeError, match="constraints"):
        constrained_training_step(module, None)


def test_automatic_optimization_is_refused():
    class Auto(Plain):
        automatic_optimization = True

        def constraints(self):
            return self.w.sum().reshape(1)

        def objective(self, batch):
            return (self.w**2).sum()

    with pytest.raises(TypeError, match="manual optimization"):
        constrained_training_step(Auto(), None)


def test_rank_deficient_jacobian_is_a_clear_error_or_truncated():
    class Redundant(Plain):
        def constraints(self):
            s = self.w.sum() - 1.0
            return torch.stack([s, 2.0 * s])  # the same constraint twice: LICQ fails everywhere

        def objective(self, batch):
            return ((self.w - torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)) ** 2).sum()

    module = Redundant()
    opt = TRSQP(module.parameters(), hessian="estimated")
    with pytest.raises(ValueError, match="rank-deficient.*on_rank_deficient='truncate'"):
        opt.step(oracle=oracle_from_module(module))
    opt = TRSQP(module.parameters(), hessian="estimated", on_rank_deficient="truncate", criticality_threshold=0.01)
    for _ in range(80):
        opt.step(oracle=oracle_from_module(module))
    # min ‖w − (1,2,3)‖² s.t. Σw = 1: w = (1,2,3) − 5/3
    expected = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64) - 5.0 / 3.0
    torch.testing.assert_close(module.w.detach(), expected, atol=1e-7, rtol=0)


def test_non_scalar_objective_is_named():
    class Vector(Plain):
        def constraints(self):
            return self.w.sum().reshape(1)

        def objective(self, batch):
            return self.w**2

    module = Vector()
    with pytest.raises(TypeError, match="objective must be a scalar"):
        TRSQP(module.parameters()).step(oracle=oracle_from_module(module))


def test_oracle_validates_callables():
    with pytest.raises(TypeError, match="objective must be callable"):
        ConstrainedOracle(objective=3, constraints=lambda: torch.zeros(1))


def test_cli_reports_a_non_positive_radius_in_one_line(run_cli, repo_root, capsys):
    with pytest.raises(SystemExit):
        run_cli("fit", "--config", str(repo_root / "configs/trsqp/cutest_trsqp.yaml"), "--trainer.fast_dev_run=1",
                "--model.init_args.optimizer.init_args.radius=-1.0")
    err = capsys.readouterr().err
    assert "radius must be a positive number, got -1.0" in err
    assert "Traceback" not in err
