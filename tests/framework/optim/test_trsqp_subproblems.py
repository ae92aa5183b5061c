"""Building blocks of TR-SQP against dense references: normal step, projector, multipliers, Steihaug-CG, Lanczos,
sample-size rules and the penalty update."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from framework.optim.constraint_geometry import ConstraintGeometry
from framework.optim.hessian_models import sr1_update
from framework.optim.lanczos import smallest_eigenpair
from framework.optim.merit import ModelReduction, increase_penalty
from framework.optim.sample_sizes import function_sample_size, gradient_sample_size, hessian_sample_size
from framework.optim.steihaug_cg import projected_steihaug_cg



@pytest.fixture(autouse=True)
def _float64_default():
    # float64 references; restored afterwards so other test modules see torch's default.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def random_problem(seed: int, m: int = 2, d: int = 6):
    gen = torch.Generator().manual_seed(seed)
    jac = torch.randn(m, d, generator=gen)
    c = torch.randn(m, generator=gen)
    a = torch.randn(d, d, generator=gen)
    return jac, c, 0.5 * (a + a.T), torch.randn(d, generator=gen)


@pytest.mark.parametrize("seed", range(5))
def test_normal_step_solves_linearized_constraint_with_minimum_norm(seed):
    jac, c, _, _ = random_problem(seed)
    geo = ConstraintGeometry.from_jacobian(c, jac)
    v = geo.normal_step()
    torch.testing.assert_close(c + jac @ v, torch.zeros_like(c), atol=1e-12, rtol=0)
    # Minimum norm: v lies in the row space of G (no null-space component) and equals the pseudo-inverse solution.
    assert float(geo.project_null(v).norm()) < 1e-12
    np.testing.assert_allclose(v.numpy(), -np.linalg.pinv(jac.numpy()) @ c.numpy(), atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_projector_and_least_squares_multipliers(seed):
    jac, c, _, g = random_problem(seed)
    geo = ConstraintGeometry.from_jacobian(c, jac)
    lam = geo.multipliers(g)
    lam_ref = np.linalg.lstsq(jac.numpy().T, -g.numpy(), rcond=None)[0]
    np.testing.assert_allclose(lam.numpy(), lam_ref, atol=1e-12)
    torch.testing.assert_close(g + jac.T @ lam, geo.project_null(g), atol=1e-12, rtol=0)
    torch.testing.assert_close(jac @ geo.project_null(g), torch.zeros(2), atol=1e-12, rtol=0)
    z = geo.null_space_basis()
    torch.testing.assert_close(z.T @ z, torch.eye(4), atol=1e-12, rtol=0)
    torch.testing.assert_close(jac @ z, torch.zeros(2, 4), atol=1e-12, rtol=0)


def test_rank_deficient_jacobian_raises_or_truncates():
    jac = torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0]])
    c = torch.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="rank-deficient"):
        ConstraintGeometry.from_jacobian(c, jac)
    geo = ConstraintGeometry.from_jacobian(c, jac, on_rank_deficient="truncate")
    assert geo.truncated and geo.rank == 1
    np.testing.assert_allclose(geo.normal_step().numpy(), -np.linalg.pinv(jac.numpy()) @ c.numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="rank-deficient"):
        ConstraintGeometry.from_jacobian(torch.ones(4), torch.randn(4, 3))  # more constraints than variables


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("radius", [0.05, 1.0, 100.0])
def test_tangential_step_in_null_space_and_radius(seed, radius):
    jac, c, b_mat, g = random_problem(seed)
    geo = ConstraintGeometry.from_jacobian(c, jac)
    res = projected_steihaug_cg(lambda v: b_mat @ v, g, geo.project_null, radius)
    t = res.step
    assert float((jac @ t).norm()) < 1e-10
    assert float(t.norm()) <= radius * (1 + 1e-10)
    # At least the Cauchy decrease along -Pg within the ball.
    pg = geo.project_null(g)
    model = lambda s: float(g @ s + 0.5 * s @ b_mat @ s)
    curv = float(pg @ b_mat @ pg)
    tau = radius / float(pg.norm()) if curv <= 0 else min(float(pg @ pg) / curv, radius / float(pg.norm()))
    cauchy = model(-tau * pg)
    assert model(t) <= cauchy + 1e-10 * max(1.0, abs(cauchy))


def test_tangential_step_equals_reduced_newton_step_when_interior():
    jac, c, _, g = random_problem(0)
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(6, 6, generator=gen)
    b_mat = a @ a.T + 6 * torch.eye(6)
    geo = ConstraintGeometry.from_jacobian(c, jac)
    res = projected_steihaug_cg(lambda v: b_mat @ v, g, geo.project_null, 1e6)
    z = geo.null_space_basis()
    exact = -z @ torch.linalg.solve(z.T @ b_mat @ z, z.T @ g)
    assert res.termination == "converged"
    torch.testing.assert_close(res.step, exact, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_lanczos_smallest_reduced_eigenpair_matches_eigh(seed):
    jac, c, b_mat, _ = random_problem(seed, m=2, d=8)
    geo = ConstraintGeometry.from_jacobian(c, jac)
    z = geo.null_space_basis()
    reference = float(torch.linalg.eigvalsh(z.T @ b_mat @ z)[0])
    start = torch.randn(8, generator=torch.Generator().manual_seed(seed + 100))
    res = smallest_eigenpair(lambda v: b_mat @ v, geo.project_null, start, max_iterations=8)
    assert res.eigenvalue == pytest.approx(reference, abs=1e-9)
    assert float(res.eigenvector.norm()) == pytest.approx(1.0)
    assert float((jac @ res.eigenvector).norm()) < 1e-10
    assert float(res.eigenvector @ b_mat @ res.eigenvector) == pytest.approx(reference, abs=1e-9)
    assert res.residual < 1e-8


def test_sample_sizes_follow_the_accuracy_rules():
    kw = dict(probability=0.05, constant=5.0, min_samples=1, max_samples=100_000)
    assert gradient_sample_size(1.0, kappa=0.01, **kw) == math.ceil(5 * math.log(1 / 0.975) / 1e-4)
    assert gradient_sample_size(0.5, kappa=0.01, **kw) > gradient_sample_size(1.0, kappa=0.01, **kw)
    assert gradient_sample_size(1e-3, kappa=0.01, **kw) == 100_000
    assert hessian_sample_size(2.0, kappa=0.01, **kw) == math.ceil(5 * math.log(1 / 0.975) / (1e-4 * 4))
    big = dict(kw, max_samples=10**9)
    # min(κ_f²Δ⁴, ε²) picks ε² = 1e-4 here (κ_f²Δ⁴ = 2.5e-3).
    assert function_sample_size(10.0, 1e-2, kappa=5e-4, second_order=False, **big) == math.ceil(5 / (0.975 * 1e-4))
    assert function_sample_size(10.0, 1e-3, kappa=5e-4, second_order=False, **kw) == 100_000
    assert function_sample_size(0.5, 1.0, kappa=5e-4, second_order=True, **kw) >= function_sample_size(
        0.5, 1.0, kappa=5e-4, second_order=False, **kw)


@pytest.mark.parametrize("quadratic,change,penalty", [(1.0, -0.5, 1.0), (-2.0, -1.0, 3.0), (0.5, 0.2, 2.0)])
def test_penalty_update_is_monotone_and_sufficient(quadratic, change, penalty):
    red = ModelReduction(quadratic, change)
    new = increase_penalty(red, penalty, threshold=-0.1, growth=1.5, max_penalty=1e8)
    assert new >= penalty
    if change < 0:
        assert red.at(new) <= -0.1
    else:
        assert new == penalty  # a larger penalty cannot help when the step does not reduce infeasibility


def test_sr1_update_satisfies_secant_condition():
    gen = torch.Generator().manual_seed(0)
    b = torch.eye(4)
    s, y = torch.randn(4, generator=gen), torch.randn(4, generator=gen)
    new = sr1_update(b, s, y)
    torch.testing.assert_close(new @ s, y)
    torch.testing.assert_close(new, new.T)
