"""Hessian-vector products, eigenvalues, trace and SLQ density against the dense Hessian of small models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.framework.callbacks.landscape.landscape_problems import exact_hessian, make_tiny_problem, mse_loss

from framework.callbacks.landscape.hessian_vector_product import HessianVectorProduct, choose_hvp_method
from framework.callbacks.landscape.hutchinson import hutchinson_trace, rademacher
from framework.callbacks.landscape.lanczos import lanczos, lanczos_top_eigenpairs
from framework.callbacks.landscape.power_iteration import power_iteration
from framework.callbacks.landscape.probe_loss import ProbeLoss, isolated_module
from framework.callbacks.landscape.spectral_density import density_on_grid, stochastic_lanczos_quadrature


@pytest.fixture(scope="module")
def problem():
    model, batches = make_tiny_problem(hidden=4)
    return model, batches, exact_hessian(model, batches)


@pytest.mark.parametrize("method", ["double_backward", "func"])
def test_hvp_matches_dense_hessian(problem, method):
    model, batches, hessian = problem
    with isolated_module(model):
        hvp = HessianVectorProduct(ProbeLoss(model, batches, loss_fn=mse_loss), method=method)
        generator = torch.Generator().manual_seed(1)
        for _ in range(3):
            v = torch.randn(hvp.dim, generator=generator, dtype=torch.float64)
            torch.testing.assert_close(hvp(v), hessian @ v, rtol=1e-9, atol=1e-10)


def test_hvp_with_several_batches_is_the_size_weighted_mean(problem):
    model, batches, _ = problem
    x, y = batches[0]
    split = [(x[:8], y[:8]), (x[8:], y[8:])]  # sizes 8 and 24: the weighted mean equals the full-batch Hessian
    hessian = exact_hessian(model, batches)
    with isolated_module(model):
        hvp = HessianVectorProduct(ProbeLoss(model, split, loss_fn=mse_loss))
        v = torch.randn(hvp.dim, dtype=torch.float64)
        torch.testing.assert_close(hvp(v), hessian @ v, rtol=1e-9, atol=1e-10)


def test_choose_hvp_method_measures_both_routes(problem):
    model, batches, _ = problem
    with isolated_module(model):
        timing = choose_hvp_method(ProbeLoss(model, batches, loss_fn=mse_loss))
    assert set(timing.seconds) == {"double_backward", "func"}
    assert timing.relative_difference < 1e-9
    assert timing.method in ("double_backward", "func")


def _by_magnitude(values: torch.Tensor, k: int) -> torch.Tensor:
    return values[torch.argsort(values.abs(), descending=True)[:k]]


def test_power_iteration_top_eigenvalues(problem):
    model, batches, hessian = problem
    exact = _by_magnitude(torch.linalg.eigvalsh(hessian), 2)
    with isolated_module(model):
        hvp = HessianVectorProduct(ProbeLoss(model, batches, loss_fn=mse_loss))
        pairs = power_iteration(hvp, hvp.dim, top_k=2, max_iter=2000, tol=1e-10,
                                generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(pairs.values, exact, rtol=1e-4, atol=1e-8)
    for value, vector in zip(pairs.values, pairs.vectors):
        residual = hessian @ vector - value * vector
        assert residual.norm() < 1e-2 * abs(value)
    assert all(pairs.converged)


def test_power_iteration_default_tolerance_is_close(problem):
    model, batches, hessian = problem
    exact = _by_magnitude(torch.linalg.eigvalsh(hessian), 1)
    with isolated_module(model):
        hvp = HessianVectorProduct(ProbeLoss(model, batches, loss_fn=mse_loss))
        pairs = power_iteration(hvp, hvp.dim, top_k=1, generator=torch.Generator().manual_seed(0),
                                dtype=torch.float64)
    assert abs(float(pairs.values[0]) - float(exact[0])) < 0.02 * abs(float(exact[0]))


def test_lanczos_top_eigenpairs_exact_with_full_steps(problem):
    model, batches, hessian = problem
    exact = _by_magnitude(torch.linalg.eigvalsh(hessian), 3)
    with isolated_module(model):
        hvp = HessianVectorProduct(ProbeLoss(model, batches, loss_fn=mse_loss))
        pairs = lanczos_top_eigenpairs(hvp, hvp.dim, top_k=3, steps=hvp.dim,
                                       generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(pairs.values, exact, rtol=1e-7, atol=1e-9)


def test_lanczos_basis_is_orthonormal_and_tridiagonalises():
    torch.manual_seed(0)
    a = torch.randn(30, 30, dtype=torch.float64)
    h = a + a.T
    result = lanczos(lambda v: h @ v, torch.randn(30, dtype=torch.float64), 20)
    q = result.basis
    torch.testing.assert_close(q @ q.T, torch.eye(20, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(q @ h @ q.T, result.tridiagonal(), atol=1e-9, rtol=0)


def test_hutchinson_trace_against_exact(problem):
    model, batches, hessian = problem
    with isolated_module(model):
        hvp = HessianVectorProduct(ProbeLoss(model, batches, loss_fn=mse_loss))
        estimate = hutchinson_trace(hvp, hvp.dim, max_samples=200, generator=torch.Generator().manual_seed(3),
                                    dtype=torch.float64)
    exact = float(torch.trace(hessian))
    # Same Rademacher vectors through the dense matrix: the implementation is exact per sample.
    generator = torch.Generator().manual_seed(3)
    manual = [float(v @ hessian @ v) for v in
              (rademacher(hvp.dim, generator=generator, dtype=torch.float64, device="cpu") for _ in range(200))]
    np.testing.assert_allclose(estimate.samples.numpy(), manual, rtol=1e-8, atol=1e-10)
    assert estimate.num_samples == 200
    assert abs(estimate.mean - exact) < 4 * estimate.standard_error
    # Variance of Hutchinson with Rademacher probes: 2 Σ_{i≠j} H_ij²; the SE must be of that size.
    off = hessian - torch.diag(torch.diag(hessian))
    expected_se = float((2 * (off ** 2).sum()).sqrt()) / 200 ** 0.5
    assert 0.6 * expected_se < estimate.standard_error < 1.5 * expected_se


def test_hutchinson_stops_on_relative_standard_error():
    h = torch.diag(torch.linspace(1.0, 2.0, 50, dtype=torch.float64))  # diagonal: every sample equals the trace
    estimate = hutchinson_trace(lambda v: h @ v, 50, max_samples=100, min_samples=5, rel_se_tol=0.05,
                                generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert estimate.num_samples == 5
    assert estimate.mean == pytest.approx(75.0)


def test_slq_density_integrates_to_one_and_matches_eigenvalue_histogram():
    torch.manual_seed(0)
    p = 60
    q, _ = torch.linalg.qr(torch.randn(p, p, dtype=torch.float64))
    eigenvalues = torch.cat([torch.linspace(-1.0, 0.5, 20), torch.linspace(2.0, 3.0, 30),
                             torch.tensor([8.0] * 10)]).double()
    h = q @ torch.diag(eigenvalues) @ q.T
    nodes = stochastic_lanczos_quadrature(lambda v: h @ v, p, steps=p, runs=20,
                                          generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(nodes.weights.sum(dim=1), torch.ones(20, dtype=torch.float64))
    density = density_on_grid(nodes, num_bins=4000)
    assert float(torch.trapezoid(density.density, density.grid)) == pytest.approx(1.0, abs=1e-6)
    # Mass per histogram bin of the exact spectrum vs the density's mass over the same bins.
    edges = [-1.5, 1.0, 4.0, 9.0]
    exact_mass = np.histogram(eigenvalues.numpy(), bins=edges)[0] / p
    grid, dens = density.grid.numpy(), density.density.numpy()
    slq_mass = [np.trapezoid(dens[(grid >= lo) & (grid < hi)], grid[(grid >= lo) & (grid < hi)])
                for lo, hi in zip(edges[:-1], edges[1:])]
    np.testing.assert_allclose(slq_mass, exact_mass, atol=0.05)
    # The Ritz values of a full-length run are the exact eigenvalues.
    np.testing.assert_allclose(np.unique(np.round(nodes.values[0].numpy(), 6)),
                               np.unique(np.round(eigenvalues.numpy(), 6)), atol=1e-5)


def test_slq_on_a_model_hessian(problem):
    model, batches, hessian = problem
    exact = torch.linalg.eigvalsh(hessian)
    with isolated_module(model):
        hvp = HessianVectorProduct(ProbeLoss(model, batches, loss_fn=mse_loss))
        nodes = stochastic_lanczos_quadrature(hvp, hvp.dim, steps=hvp.dim, runs=3,
                                              generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    density = density_on_grid(nodes, num_bins=4000)
    assert float(torch.trapezoid(density.density, density.grid)) == pytest.approx(1.0, abs=1e-6)
    assert float(nodes.values.max()) == pytest.approx(float(exact.max()), rel=1e-6)
    assert float(nodes.values.min()) == pytest.approx(float(exact.min()), rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("kwargs, match", [
    ({"top_k": 0}, "top_k"), ({"max_iter": 0}, "max_iter"), ({"tol": 0.0}, "tol"),
])
def test_power_iteration_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        power_iteration(lambda v: v, 5, **kwargs)


def test_trace_and_slq_bad_input():
    with pytest.raises(ValueError, match="max_samples"):
        hutchinson_trace(lambda v: v, 5, max_samples=0)
    with pytest.raises(ValueError, match="SLQ steps"):
        stochastic_lanczos_quadrature(lambda v: v, 5, steps=0)
