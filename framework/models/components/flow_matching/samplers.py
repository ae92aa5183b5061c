"""Fixed-step ODE solvers for sampling a learned vector field: Euler, Heun and classical RK4.

``intervals`` is the number of solver *intervals* (steps) on a uniform grid over ``[t0, t1]``: ``intervals = 10``
takes 10 steps (11 grid points). The public code passes torchdiffeq the number of *grid points*, so its "10 steps"
are 9 intervals and its "1 step" returns the initial state; here every ``intervals >= 1`` moves the state.

Field evaluations per solve: Euler ``intervals``, Heun ``2 · intervals``, RK4 ``4 · intervals``.

The field is called as ``field(x [B, *S], t [B]) -> [B, *S]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["SOLVERS", "integrate", "field_evaluations"]

#: solver names accepted by :func:`integrate`
SOLVERS = ("euler", "heun", "rk4")
_EVALS = {"euler": 1, "heun": 2, "rk4": 4}

Field = Callable[[Tensor, Tensor], Tensor]


def _check(method: str, intervals: int) -> None:
    if method not in _EVALS:
        raise ValueError(f"unknown solver {method!r}; choose one of {list(SOLVERS)}")
    if not isinstance(intervals, int) or isinstance(intervals, bool) or intervals < 1:
        raise ValueError(f"intervals (number of solver steps) must be an integer >= 1, got {intervals!r}")


def field_evaluations(method: str, intervals: int) -> int:
    """Number of vector-field evaluations one solve takes."""
    _check(method, intervals)
    return _EVALS[method] * intervals


def integrate(field: Field, x0: Tensor, *, method: str = "rk4", intervals: int = 10, t0: float = 0.0,
              t1: float = 1.0, return_path: bool = False) -> Tensor:
    """Integrate ``dx/dt = field(x, t)`` from ``t0`` to ``t1`` in ``intervals`` equal steps.

    Args:
        field: ``(x [B, *S], t [B]) -> [B, *S]``.
        x0: ``[B, *S]`` initial state.
        method: ``"euler"``, ``"heun"`` (explicit trapezoid) or ``"rk4"``.
        intervals: number of solver steps (>= 1).
        t0, t1: integration interval.
        return_path: also return the states at every grid point.

    Returns:
        ``x(t1)`` ``[B, *S]``, or ``[intervals + 1, B, *S]`` with ``return_path``.
    """
    _check(method, intervals)
    h = (t1 - t0) / intervals
    x = x0
    states = [x0] if return_path else None
    batch = x0.shape[0]

    def tt(value: float) -> Tensor:
        return torch.full((batch,), value, dtype=x0.dtype, device=x0.device)

    for i in range(intervals):
        t = t0 + i * h
        if method == "euler":
            x = x + h * field(x, tt(t))
        elif method == "heun":
            k1 = field(x, tt(t))
            k2 = field(x + h * k1, tt(t + h))
            x = x + 0.5 * h * (k1 + k2)
        else:
            k1 = field(x, tt(t))
            k2 = field(x + 0.5 * h * k1, tt(t + 0.5 * h))
            k3 = field(x + 0.5 * h * k2, tt(t + 0.5 * h))
            k4 = field(x + h * k3, tt(t + h))
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if states is not None:
            states.append(x)
    return torch.stack(states) if states is not None else x
