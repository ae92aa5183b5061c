"""TR-SQP iterations on the test problems: eigen step, penalty monotonicity, trust-region containment, convergence,
and the line-search baseline."""

from __future__ import annotations

import pytest
import torch

from framework.optim.constrained_protocol import oracle_from_module
from framework.optim.line_search_sqp import AdaptiveL1SQP
from framework.optim.trsqp import TRSQP
from framework.models.constrained_test_problem import ConstrainedTestProblemModule


def lagrangian_hessian(module: ConstrainedTestProblemModule) -> tuple[torch.Tensor, torch.Tensor]:
    """True ∇²L with least-squares multipliers and the constraint Jacobian at the module's x."""
    problem, x = module.problem, module.x.detach()
    grad = torch.func.grad(problem.objective)(x)
    jac = torch.func.jacrev(problem.constraints)(x)
    lam = torch.linalg.lstsq(jac.T, -grad.unsqueeze(1)).solution.squeeze(1)
    hess = torch.func.hessian(lambda y: problem.objective(y) + lam @ problem.constraints(y))(x)
    return hess, jac


@pytest.mark.parametrize("problem", ["SADDLE_SPHERE", "SADDLE_QUARTIC"])
def test_eigen_step_has_negative_curvature_and_escapes(problem):
    module = ConstrainedTestProblemModule(problem=problem)
    hess, jac = lagrangian_hessian(module)
    x0 = module.x.detach().clone()
    opt = TRSQP(module.parameters(), mode="second_order", hessian="estimated")
    for _ in range(10):  # long eigen steps may fail the ratio test; the radius shrinks until one passes
        info = opt.step(oracle=oracle_from_module(module))
        assert info.min_reduced_curvature < -0.5 and info.reduced_gradient_norm < 1e-12
        assert info.step_type == "eigen"
        if info.accepted:
            break
    assert info.accepted
    step = module.x.detach() - x0
    # The accepted point is x0 + eigen step + second-order correction (in the row space of G); the null-space part
    # is the eigen step, and it has negative curvature of the Lagrangian.
    q, _ = torch.linalg.qr(jac.T)
    eigen_part = step - q @ (q.T @ step)
    assert float(eigen_part.norm()) > 0.1
    assert float(eigen_part @ hess @ eigen_part) < -0.5 * float(eigen_part @ eigen_part)
    for _ in range(60):
        opt.step(oracle=oracle_from_module(module))
    hess, jac = lagrangian_hessian(module)
    z = torch.linalg.svd(jac, full_matrices=True).Vh[jac.shape[0]:].T
    assert float(torch.linalg.eigvalsh(z.T @ hess @ z)[0]) >= -1e-6
    assert float(module.problem.objective(module.x.detach())) == pytest.approx(module.problem.optimal_value, abs=1e-6)


def test_without_correction_the_eigen_step_cannot_leave_a_curved_saddle():
    # On the sphere the eigen step raises ‖c‖ quadratically, which the linearised model does not see: the l2 merit
    # rejects every eigen step (the Maratos effect at a saddle, as the paper's abstract says) unless corrected.
    module = ConstrainedTestProblemModule(problem="SADDLE_SPHERE")
    x0 = module.x.detach().clone()
    opt = TRSQP(module.parameters(), mode="second_order", hessian="estimated", second_order_correction=False)
    for _ in range(15):
        info = opt.step(oracle=oracle_from_module(module))
        assert info.step_type == "eigen" and not info.accepted
    assert torch.equal(module.x.detach(), x0)


def test_first_order_mode_stays_at_a_strict_saddle():
    module = ConstrainedTestProblemModule(problem="SADDLE_SPHERE")
    x0 = module.x.detach().clone()
    opt = TRSQP(module.parameters(), mode="first_order", hessian="estimated")
    for _ in range(20):
        info = opt.step(oracle=oracle_from_module(module))
        assert not info.accepted
    assert torch.equal(module.x.detach(), x0)


@pytest.mark.parametrize("hessian", ["identity", "sr1", "estimated", "averaged"])
def test_penalty_never_decreases_and_steps_stay_in_the_trust_region(hessian):
    module = ConstrainedTestProblemModule(problem="HS78", noise_variance=1e-2, noise_seed=3)
    opt = TRSQP(module.parameters(), hessian=hessian, second_order_correction=False)
    oracle = oracle_from_module(module)
    penalties, radius = [opt.trsqp_state["penalty"]], opt.trsqp_state["radius"]
    for _ in range(60):
        x_before = module.x.detach().clone()
        info = opt.step(oracle=oracle)
        moved = float((module.x.detach() - x_before).norm())
        assert moved <= radius * (1 + 1e-10)
        penalties.append(info.penalty)
        radius = info.radius
    assert all(b >= a for a, b in zip(penalties, penalties[1:]))


@pytest.mark.parametrize("problem", ["HS42", "HS40", "MARATOS"])
def test_exact_oracle_converges_to_the_known_solution(problem):
    module = ConstrainedTestProblemModule(problem=problem)
    opt = TRSQP(module.parameters(), hessian="estimated", criticality_threshold=0.01)
    oracle = oracle_from_module(module)
    for _ in range(200):
        opt.step(oracle=oracle)
        if module.exact_kkt() < 1e-10:
            break
    solution = torch.tensor(module.problem.solution, dtype=torch.float64)
    assert module.exact_kkt() < 1e-6
    assert float((module.x.detach() - solution).norm()) < 1e-5


def test_line_search_baseline_converges_on_hs42_with_monotone_penalty():
    module = ConstrainedTestProblemModule(problem="HS42")
    opt = AdaptiveL1SQP(module.parameters())
    oracle = oracle_from_module(module)
    penalties = []
    for _ in range(400):
        info = opt.step(oracle=oracle)
        penalties.append(info.penalty)
        if module.exact_kkt() < 1e-8:
            break
    assert module.exact_kkt() < 1e-8
    assert all(b >= a for a, b in zip(penalties, penalties[1:]))


def test_fixed_batch_without_draw_batch_uses_the_loader_batch():
    class FixedBatchProblem(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([0.3, -0.2], dtype=torch.float64))

        def constraints(self):
            return (self.w.sum() - 1.0).reshape(1)

        def objective(self, batch):
            return ((batch - self.w) ** 2).sum(dim=1).mean()

    module = FixedBatchProblem()
    batch = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)  # mean (1, 0): solution (1, 0)
    opt = TRSQP(module.parameters(), hessian="estimated", criticality_threshold=0.01)
    oracle = oracle_from_module(module, batch)
    assert not oracle.adaptive and oracle.fixed_batch_size == 2
    for _ in range(60):
        info = opt.step(oracle=oracle)
    assert info.gradient_samples == 2
    torch.testing.assert_close(module.w.detach(), torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-8, rtol=0)


def test_hessian_vector_product_mode_matches_dense_mode():
    runs = {}
    for limit in (1, 2048):  # 1: the 4-parameter model exceeds it, so "estimated" uses Hessian-vector products
        module = ConstrainedTestProblemModule(problem="HS42")
        opt = TRSQP(module.parameters(), hessian="estimated", dense_hessian_limit=limit, criticality_threshold=0.01)
        for _ in range(15):
            opt.step(oracle=oracle_from_module(module))
        runs[limit] = module.x.detach().clone()
    torch.testing.assert_close(runs[1], runs[2048], atol=1e-10, rtol=0)


def test_common_random_numbers_share_the_merit_batch():
    module = ConstrainedTestProblemModule(problem="HS42", noise_variance=1e-2, noise_seed=0)
    opt = TRSQP(module.parameters(), hessian="estimated", common_random_numbers=True, second_order_correction=False)
    oracle = oracle_from_module(module)
    for _ in range(80):
        info = opt.step(oracle=oracle)
        if info.step_type != "none":
            assert info.function_samples == 100_000  # one batch of N_f (at the cap) for both merit evaluations
    solution = torch.tensor(module.problem.solution, dtype=torch.float64)
    assert float((module.x.detach() - solution).norm()) < 1e-2
