"""Fixed-step solvers: orders of accuracy on dx/dt = λx, interval counting, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from framework.models.components.flow_matching import field_evaluations, integrate


def _error(method, intervals):
    x0 = torch.ones(1, 1, dtype=torch.float64)
    x1 = integrate(lambda x, t: -2.0 * x, x0, method=method, intervals=intervals)
    return abs(float(x1) - math.exp(-2.0))


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2), ("rk4", 4)])
def test_convergence_order(method, order):
    ratio = _error(method, 20) / _error(method, 40)
    assert ratio == pytest.approx(2**order, rel=0.15)


def test_time_dependent_field_and_path():
    # dx/dt = 3 t^2 -> x(1) = x(0) + 1, exact for RK4 (cubic) on any grid
    x0 = torch.zeros(2, 3, dtype=torch.float64)
    out = integrate(lambda x, t: 3 * t[:, None] ** 2 * torch.ones_like(x), x0, method="rk4", intervals=3,
                    return_path=True)
    assert out.shape == (4, 2, 3)
    assert torch.allclose(out[-1], torch.ones(2, 3, dtype=torch.float64))
    assert torch.allclose(out[0], x0)


def test_one_interval_moves_the_state():
    x0 = torch.zeros(1, 1)
    assert float(integrate(lambda x, t: torch.ones_like(x), x0, method="euler", intervals=1)) == pytest.approx(1.0)


def test_counts_and_bad_input():
    assert field_evaluations("euler", 10) == 10
    assert field_evaluations("heun", 10) == 20
    assert field_evaluations("rk4", 10) == 40
    with pytest.raises(ValueError, match="intervals .* must be an integer >= 1, got 0"):
        integrate(lambda x, t: x, torch.zeros(1, 1), intervals=0)
    with pytest.raises(ValueError, match="unknown solver 'dopri5'.*euler.*heun.*rk4"):
        integrate(lambda x, t: x, torch.zeros(1, 1), method="dopri5")
