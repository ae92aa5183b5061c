"""Filter normalisation against its definition; grid evaluation (loop vs vmap, centre, explicit perturbation)."""

from __future__ import annotations

import pytest
import torch
from tests.framework.callbacks.landscape.landscape_problems import make_tiny_problem, mse_loss

from framework.callbacks.landscape.directions import normalize_direction, random_directions
from framework.callbacks.landscape.grid_evaluation import evaluate_grid, grid_axes
from framework.callbacks.landscape.parameter_vectors import ParameterSpace
from framework.callbacks.landscape.probe_loss import ProbeLoss, isolated_module


def conv_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3))


def test_filter_normalization_matches_definition():
    model = conv_net()
    space = ParameterSpace.of(model)
    theta = space.flat_parameters(model)
    raw = torch.randn(space.dim, generator=torch.Generator().manual_seed(0))
    direction = space.unflatten(normalize_direction(raw, theta, space, normalization="filter", bias_policy="zero"))
    raw_parts = space.unflatten(raw)
    for name, param in model.named_parameters():
        d = direction[name]
        if param.dim() <= 1:
            assert torch.count_nonzero(d) == 0, name  # biases and BN affine zeroed
            continue
        for i in range(param.shape[0]):  # every filter / output neuron
            expected = raw_parts[name][i] * param[i].norm() / (raw_parts[name][i].norm() + 1e-10)
            torch.testing.assert_close(d[i], expected.detach())
            assert d[i].norm() == pytest.approx(float(param[i].norm()), rel=1e-5)


def test_layer_normalization_and_bias_policies():
    model = conv_net()
    space = ParameterSpace.of(model)
    theta = space.flat_parameters(model)
    raw = torch.randn(space.dim, generator=torch.Generator().manual_seed(1))
    layer = space.unflatten(normalize_direction(raw, theta, space, normalization="layer", bias_policy="normalize"))
    copy = space.unflatten(normalize_direction(raw, theta, space, normalization="filter", bias_policy="copy"))
    for name, param in model.named_parameters():
        assert layer[name].norm() == pytest.approx(float(param.norm()), rel=1e-5)
        if param.dim() == 1:
            torch.testing.assert_close(copy[name], param.detach())


def test_random_directions_are_seeded():
    model = conv_net()
    space = ParameterSpace.of(model)
    theta = space.flat_parameters(model)
    a = random_directions(theta, space, count=2, seed=3)
    b = random_directions(theta, space, count=2, seed=3)
    c = random_directions(theta, space, count=2, seed=4)
    assert a.shape == (2, space.dim)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_direction_bad_input():
    model = conv_net()
    space = ParameterSpace.of(model)
    theta = space.flat_parameters(model)
    with pytest.raises(ValueError, match="normalization"):
        normalize_direction(theta, theta, space, normalization="unit")
    with pytest.raises(ValueError, match="bias_policy"):
        normalize_direction(theta, theta, space, bias_policy="ignore")


@pytest.mark.parametrize("batching", ["loop", "vmap", "auto"])
def test_grid_matches_explicit_perturbation(batching):
    model, batches = make_tiny_problem()
    space = ParameterSpace.of(model)
    before = [p.detach().clone() for p in model.parameters()]
    with isolated_module(model):
        loss = ProbeLoss(model, batches, loss_fn=mse_loss)
        theta = space.flat_parameters(model)
        directions = random_directions(theta, space, count=2, seed=0)
        grid = evaluate_grid(loss, directions, resolution=5, span=0.5, batching=batching, chunk_size=7)
    assert grid.losses.shape == (5, 5)
    assert grid.batching in ("loop", "vmap") and (batching == "auto" or grid.batching == batching)
    # Centre point = the loss at θ*.
    assert float(grid.losses[2, 2]) == pytest.approx(float(mse_loss(model, batches[0])), rel=1e-12)
    # One corner recomputed by writing the perturbed weights into a copy of the model.
    import copy

    clone = copy.deepcopy(model)
    perturbed = space.unflatten(theta + (-0.5) * directions[0] + 0.25 * directions[1])
    with torch.no_grad():
        for name, param in clone.named_parameters():
            param.copy_(perturbed[name])
    assert float(grid.losses[0, 3]) == pytest.approx(float(mse_loss(clone, batches[0])), rel=1e-10)
    for a, b in zip(before, model.parameters()):
        assert torch.equal(a, b)


def test_grid_one_dimensional_and_axes():
    model, batches = make_tiny_problem()
    space = ParameterSpace.of(model)
    with isolated_module(model):
        loss = ProbeLoss(model, batches, loss_fn=mse_loss)
        directions = random_directions(space.flat_parameters(model), space, count=1, seed=0)
        grid = evaluate_grid(loss, directions, resolution=7, span=2.0, batching="loop")
    assert grid.losses.shape == (7,)
    torch.testing.assert_close(grid.axes[0], torch.linspace(-2.0, 2.0, 7, dtype=torch.float64))


@pytest.mark.parametrize("resolution, span, match", [
    (2, 1.0, "resolution"), (0, 1.0, "resolution"), (5, 0.0, "range"), (5, -1.0, "range"),
    (5, float("inf"), "range"),
])
def test_grid_bad_input(resolution, span, match):
    with pytest.raises(ValueError, match=match):
        grid_axes(resolution, span, 2)


def test_vmap_failure_falls_back_to_loop_in_auto_mode():
    model, batches = make_tiny_problem()

    def item_loss(module, batch):  # .item() cannot be vmapped
        value = mse_loss(module, batch)
        return value * (1.0 + 0.0 * value.item())

    space = ParameterSpace.of(model)
    with isolated_module(model):
        loss = ProbeLoss(model, batches, loss_fn=item_loss)
        directions = random_directions(space.flat_parameters(model), space, count=2, seed=0)
        grid = evaluate_grid(loss, directions, resolution=3, span=1.0, batching="auto")
        assert grid.batching == "loop"
        with pytest.raises(ValueError, match="batching='vmap' failed"):
            evaluate_grid(loss, directions, resolution=3, span=1.0, batching="vmap")
