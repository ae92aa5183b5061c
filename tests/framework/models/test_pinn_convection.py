"""Convection PINN: exact solution, derivative routes, loss terms, collocation data, probes through torch.func."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from framework.callbacks.landscape.grid_evaluation import evaluate_grid
from framework.callbacks.landscape.hessian_vector_product import HessianVectorProduct
from framework.callbacks.landscape.parameter_vectors import ParameterSpace
from framework.callbacks.landscape.probe_loss import ProbeLoss, isolated_module
from framework.datamodules.convection_collocation import ConvectionCollocation
from framework.models.pinn_convection import PINNConvection, convection_exact_solution, functional_pinn_loss


@pytest.fixture(scope="module")
def data():
    module = ConvectionCollocation(n_collocation=100)
    module.setup()
    return module


def test_exact_solution_solves_the_pde_and_initial_condition():
    beta = 7.0
    points = torch.rand(50, 2, dtype=torch.float64) * torch.tensor([2 * math.pi, 1.0], dtype=torch.float64)
    points.requires_grad_(True)
    u = convection_exact_solution(points, beta)
    (grad,) = torch.autograd.grad(u.sum(), points)
    torch.testing.assert_close(grad[:, 1] + beta * grad[:, 0], torch.zeros(50, dtype=torch.float64), atol=1e-12,
                               rtol=0)
    x = torch.linspace(0, 2 * math.pi, 9, dtype=torch.float64)
    torch.testing.assert_close(convection_exact_solution(torch.stack([x, 0 * x], 1), beta), torch.sin(x))
    # Not the nu = 1, beta = 1 solution the public LossLens scripts compare with.
    assert not torch.allclose(convection_exact_solution(points.detach(), beta),
                              convection_exact_solution(points.detach(), 1.0))


def test_collocation_data(data):
    batch = data.train_batch
    assert batch["collocation"].shape == (100, 2)
    assert batch["initial"].shape == (256, 2) and batch["initial_u"].shape == (256,)
    assert batch["boundary_left"].shape == (100, 2) and batch["boundary_right"].shape == (100, 2)
    c = batch["collocation"]
    assert (c[:, 0] > 0).all() and (c[:, 1] > 0).all() and (c[:, 0] < 2 * math.pi).all() and (c[:, 1] <= 1).all()
    assert len(torch.unique(c, dim=0)) == 100
    torch.testing.assert_close(batch["initial_u"], torch.sin(batch["initial"][:, 0]))
    assert torch.all(batch["boundary_left"][:, 0] == 0)
    assert torch.allclose(batch["boundary_right"][:, 0], torch.full((100,), 2 * math.pi))
    assert data.grid_points.shape == (25_600, 2)
    # Same draw as the original code: legacy RandomState(0).choice over the interior points in row-major (t, x).
    x = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    t = np.linspace(0, 1, 100)
    xx, tt = np.meshgrid(x, t)
    points = np.stack([xx.ravel(), tt.ravel()], 1)
    interior = points[(points[:, 1] > 0) & (points[:, 0] > 0)]
    np.testing.assert_allclose(c.numpy(), interior[np.random.RandomState(0).choice(len(interior), 100, replace=False)],
                               rtol=1e-6)


def test_collocation_bad_input():
    with pytest.raises(ValueError, match="n_collocation"):
        ConvectionCollocation(n_collocation=0)
    with pytest.raises(ValueError, match="exceeds"):
        ConvectionCollocation(n_collocation=10_000, nx=10, nt=10)
    with pytest.raises(ValueError, match="nx"):
        ConvectionCollocation(nx=2)


def test_residual_routes_agree_with_finite_differences():
    torch.manual_seed(0)
    model = PINNConvection(beta=5.0).double()
    points = torch.rand(20, 2, dtype=torch.float64) * torch.tensor([6.0, 1.0], dtype=torch.float64)
    h = 1e-5
    ex, et = torch.tensor([h, 0.0], dtype=torch.float64), torch.tensor([0.0, h], dtype=torch.float64)
    with torch.no_grad():
        u_x = (model(points + ex) - model(points - ex)) / (2 * h)
        u_t = (model(points + et) - model(points - et)) / (2 * h)
    expected = u_t + 5.0 * u_x
    torch.testing.assert_close(model.residual(points, derivatives="autograd"), expected, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(model.residual(points, derivatives="func"), expected, rtol=1e-6, atol=1e-8)


def test_loss_terms(data):
    torch.manual_seed(0)
    model = PINNConvection(beta=3.0)
    batch = data.train_batch
    terms = model.loss_terms(batch)
    with torch.no_grad():
        initial = ((model(batch["initial"]) - torch.sin(batch["initial"][:, 0])) ** 2).mean()
        boundary = ((model(batch["boundary_left"]) - model(batch["boundary_right"])) ** 2).mean()
    assert float(terms["initial"]) == pytest.approx(float(initial), rel=1e-6)
    assert float(terms["boundary"]) == pytest.approx(float(boundary), rel=1e-6)
    assert float(model.loss(batch)) == pytest.approx(float(functional_pinn_loss(model, batch)), rel=1e-5)
    assert float(model.training_step(batch, 0)) == pytest.approx(float(model.loss(batch)), rel=1e-6)


def test_relative_l2_error(data):
    model = PINNConvection(beta=2.0)
    model.forward = lambda points: convection_exact_solution(points, 2.0)
    assert model.relative_l2_error(data.grid_points) == pytest.approx(0.0, abs=1e-6)
    model.forward = lambda points: torch.zeros(len(points))
    assert model.relative_l2_error(data.grid_points) == pytest.approx(1.0)


def test_short_training_reduces_the_loss_and_logs_the_error(tmp_path, data):
    pl.seed_everything(0, verbose=False)
    model = PINNConvection(beta=1.0, layers=(20, 20), lbfgs_max_iter=40)
    before = float(model.loss(data.train_batch))
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(model, ConvectionCollocation(n_collocation=100))
    assert float(model.loss(data.train_batch)) < 0.5 * before
    error = float(trainer.callback_metrics["val/rel_l2"])
    assert error == pytest.approx(model.relative_l2_error(data.grid_points), rel=1e-4)


def test_func_hvp_and_vmap_grid_agree_with_autograd_routes(data):
    torch.manual_seed(0)
    model = PINNConvection(beta=10.0, layers=(10, 10)).double()
    batch = {k: v.double() for k, v in data.train_batch.items()}
    space = ParameterSpace.of(model)
    with isolated_module(model):
        autograd_loss = ProbeLoss(model, [batch])  # training_step: autograd.grad residual, double backward
        func_loss = ProbeLoss(model, [batch], loss_fn=functional_pinn_loss)
        v = torch.randn(space.dim, dtype=torch.float64)
        torch.testing.assert_close(HessianVectorProduct(func_loss, method="func")(v),
                                   HessianVectorProduct(autograd_loss, method="double_backward")(v),
                                   rtol=1e-7, atol=1e-9)
        directions = torch.randn(2, space.dim, dtype=torch.float64) * 0.1
        looped = evaluate_grid(autograd_loss, directions, resolution=3, span=1.0, batching="loop")
        batched = evaluate_grid(func_loss, directions, resolution=3, span=1.0, batching="vmap")
    assert batched.batching == "vmap"
    torch.testing.assert_close(batched.losses, looped.losses, rtol=1e-9, atol=1e-12)


def test_bad_model_settings():
    with pytest.raises(ValueError, match="beta"):
        PINNConvection(beta=-1.0)
    with pytest.raises(ValueError, match="derivatives"):
        PINNConvection(derivatives="finite_difference")
    with pytest.raises(ValueError, match="layers"):
        PINNConvection(layers=(0,))
    with pytest.raises(ValueError, match="lbfgs_max_iter"):
        PINNConvection(lbfgs_max_iter=0)
