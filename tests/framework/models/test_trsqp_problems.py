"""The CUTEst / saddle test problems, the simulated noisy oracle, and TR-SQP inside a Lightning Trainer."""

from __future__ import annotations

from functools import partial

import lightning.pytorch as pl
import pytest
import torch

from framework.datamodules.optimizer_iterations import OptimizerIterationsDataModule
from framework.optim.trsqp import TRSQP
from framework.models.components.trsqp.noise_model import GaussianOracleNoise
from framework.models.components.trsqp.test_problems import CUTEST_PROBLEMS, SADDLE_PROBLEMS, get_problem
from framework.models.constrained_test_problem import ConstrainedTestProblemModule, exact_kkt_residual


@pytest.mark.parametrize("name", sorted(CUTEST_PROBLEMS))
def test_listed_solutions_are_kkt_points(name):
    problem = get_problem(name)
    x = torch.tensor(problem.solution, dtype=torch.float64)
    # Literature solutions are rounded to 4-7 digits; the KKT residual reflects that rounding.
    assert exact_kkt_residual(problem, x) < 2e-3
    if problem.optimal_value is not None:
        assert float(problem.objective(x)) == pytest.approx(problem.optimal_value, abs=1e-4)
    assert len(problem.start) == problem.dim and problem.num_constraints < problem.dim


def test_problem_sizes_match_cutest():
    sizes = {name: (p.dim, p.num_constraints) for name, p in CUTEST_PROBLEMS.items()}
    assert sizes == {"BT4": (3, 2), "BT5": (3, 2), "BT8": (5, 2), "BT9": (4, 2), "MARATOS": (2, 1),
                     "HS39": (4, 2), "HS40": (4, 3), "HS42": (4, 2), "HS78": (5, 3), "HS79": (5, 3)}


@pytest.mark.parametrize("name", sorted(SADDLE_PROBLEMS))
def test_saddle_starts_are_strict_saddles(name):
    problem = get_problem(name)
    x = torch.tensor(problem.start, dtype=torch.float64)
    assert exact_kkt_residual(problem, x) < 1e-14
    grad = torch.func.grad(problem.objective)(x)
    jac = torch.func.jacrev(problem.constraints)(x)
    lam = torch.linalg.lstsq(jac.T, -grad.unsqueeze(1)).solution.squeeze(1)
    hess = torch.func.hessian(lambda y: problem.objective(y) + lam @ problem.constraints(y))(x)
    z = torch.linalg.svd(jac, full_matrices=True).Vh[jac.shape[0]:].T
    eig = torch.linalg.eigvalsh(z.T @ hess @ z)
    assert float(eig[0]) < -0.5 and float(eig[-1]) > 0.5


def test_unknown_problem_is_named():
    with pytest.raises(ValueError, match="problem must be one of"):
        get_problem("HS999")
    with pytest.raises(ValueError, match="start must have 4 entries"):
        ConstrainedTestProblemModule(problem="HS42", start=[1.0, 2.0])


def test_noisy_objective_has_the_drawn_value_gradient_and_hessian():
    module = ConstrainedTestProblemModule(problem="HS79", noise_variance=0.3, noise_seed=1)
    noise = module.draw_batch(7)
    x = module.x
    value = module.objective(noise)
    grad, = torch.autograd.grad(value, x, create_graph=True)
    hess = torch.stack([torch.autograd.grad(grad[i], x, retain_graph=True)[0] for i in range(5)])
    exact_x = x.detach()
    torch.testing.assert_close(value.detach(), module.problem.objective(exact_x) + noise.value)
    torch.testing.assert_close(grad.detach(), torch.func.grad(module.problem.objective)(exact_x) + noise.gradient)
    torch.testing.assert_close(hess.detach(), torch.func.hessian(module.problem.objective)(exact_x) + noise.hessian)


def test_sample_mean_noise_has_the_authors_covariance():
    sigma, n, d = 0.5, 4, 3
    oracle = GaussianOracleNoise(d, sigma, seed=0)
    grads = torch.stack([oracle.draw(n).gradient for _ in range(20000)])
    cov = torch.cov(grads.T)
    expected = sigma / n * (torch.eye(d, dtype=torch.float64) + torch.ones(d, d, dtype=torch.float64))
    torch.testing.assert_close(cov, expected, atol=0.01, rtol=0.05)
    values = torch.stack([oracle.draw(n).value for _ in range(20000)])
    assert float(values.var()) == pytest.approx(sigma / n, rel=0.05)


def test_exact_oracle_draws_nothing():
    module = ConstrainedTestProblemModule(problem="HS42")
    assert module.draw_batch(100) is None
    assert float(module.objective(None).detach()) == float(module.problem.objective(module.x.detach()))


def test_trsqp_inside_a_trainer_reaches_the_hs42_optimum(tmp_path):
    module = ConstrainedTestProblemModule(
        problem="HS42", optimizer=partial(TRSQP, hessian="estimated", criticality_threshold=0.01),
        stop_at_relative_kkt=1e-12,
    )
    trainer = pl.Trainer(max_steps=200, precision="64-true", accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(module, OptimizerIterationsDataModule(iterations=500))
    solution = torch.tensor(module.problem.solution, dtype=torch.float64)
    torch.testing.assert_close(module.x.detach(), solution, atol=1e-8, rtol=0)
    assert module.exact_kkt() < 1e-8
    logged = trainer.callback_metrics
    for key in ("trsqp/kkt", "trsqp/radius", "trsqp/penalty", "trsqp/gradient_samples", "trsqp/accepted",
                "problem/relative_kkt"):
        assert key in logged, key
    assert trainer.global_step < 200  # stopped on the KKT criterion


def test_noisy_hs42_in_a_trainer_gets_close(tmp_path):
    module = ConstrainedTestProblemModule(problem="HS42", noise_variance=1e-4, noise_seed=0,
                                          optimizer=partial(TRSQP, hessian="estimated"))
    trainer = pl.Trainer(max_steps=150, precision="64-true", accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(module, OptimizerIterationsDataModule(iterations=500))
    solution = torch.tensor(module.problem.solution, dtype=torch.float64)
    assert float((module.x.detach() - solution).norm()) < 1e-3
