"""Equality-constrained test problems in torch: the ten CUTEst problems of the TR-StoSQP experiments and strict-saddle
problems where first-order methods stall.

CUTEst problems (Hock & Schittkowski 1981; Boggs & Tolle 1989; SIF files of CUTEst) with their standard (SIF) starting
points: BT4, BT5, BT8, BT9, MARATOS, HS39, HS40, HS42, HS78, HS79. Every function takes ``x`` of shape ``(d,)`` and
returns the objective (scalar) or the constraint vector ``(m,)``; all are polynomials, so autograd gives exact
derivatives. Reference solutions are the literature values (rounded); the tests check them against the KKT conditions.

Notes on the SIF variants (as in CUTEst, which is what the authors' Julia code loads):
* BT4 start is SIF start 1 ``(3.1494, 1.4523, −3.6017)`` (sif2jax's default is a "solution", not a start). The point
  ``(4.0382, −2.9470, −0.09115)`` quoted as BT4's solution there is feasible but *not* stationary for this objective
  (KKT residual 12.4); the reference here is the local minimiser that scipy's trust-constr and TR-SQP both reach from
  the SIF start, ``(3.63195, 0.72673, −3.35869)`` with ``f = 3.28904``;
* BT5 uses ``+1000`` (AMPL / pycutest; the SIF constant is irrelevant for the minimiser);
* BT8 violates LICQ at its solution ``(1, 0, 0, 0, 0)`` (both constraint gradients are multiples of ``e₁``);
* MARATOS is the SIF form ``−x₁ + τ(x₁² + x₂²)`` with ``τ = 10⁻⁶`` on the unit circle, start ``(1.1, 0.1)``;
* HS39 and BT9 are the same problem (CUTEst keeps both names).

Saddle problems (ours; the paper's saddle-point problems are not specified in any available source):
* ``SADDLE_SPHERE``: ``min ½ xᵀ diag(1, 0, −1) x  s.t. ‖x‖² = 1`` from ``e₂``, a strict saddle (reduced Hessian
  eigenvalues ``±1``) with zero reduced gradient; minimisers ``±e₃``, ``f* = −½``;
* ``SADDLE_QUARTIC``: ``min ½x₁² − ½x₂² + ¼x₂⁴ + ½x₃²  s.t. x₃ − x₁x₂ = 0`` from the origin (reduced Hessian
  ``diag(1, −1)``); minimisers ``(0, ±1, 0)``, ``f* = −¼``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["EqualityConstrainedTestProblem", "TEST_PROBLEMS", "CUTEST_PROBLEMS", "SADDLE_PROBLEMS", "get_problem"]

SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class EqualityConstrainedTestProblem:
    """``min f(x) s.t. c(x) = 0`` with a start point and (where known) a solution.

    Attributes:
        name: CUTEst-style name.
        objective: ``x (d,) -> ()``.
        constraints: ``x (d,) -> (m,)``.
        start: standard starting point (length ``d``).
        solution: a known local minimiser (literature values, rounded) or None.
        optimal_value: ``f(solution)`` or None.
        family: "cutest" or "saddle".
    """

    name: str
    objective: Callable[[Tensor], Tensor]
    constraints: Callable[[Tensor], Tensor]
    start: tuple[float, ...]
    solution: tuple[float, ...] | None
    optimal_value: float | None
    family: str

    @property
    def dim(self) -> int:
        return len(self.start)

    @property
    def num_constraints(self) -> int:
        return int(self.constraints(torch.tensor(self.start, dtype=torch.float64)).numel())


def _bt4_f(x):
    return x[0] - x[1] + x[1] ** 3


def _bt4_c(x):
    return torch.stack([x[0] ** 2 + x[1] ** 2 + x[2] ** 2 - 25.0, x[0] + x[1] + x[2] - 1.0])


def _bt5_f(x):
    return 1000.0 - x[0] ** 2 - 2.0 * x[1] ** 2 - x[2] ** 2 - x[0] * x[1] - x[0] * x[2]


def _bt5_c(x):
    return torch.stack([x[0] ** 2 + x[1] ** 2 + x[2] ** 2 - 25.0, 8.0 * x[0] + 14.0 * x[1] + 7.0 * x[2] - 56.0])


def _bt8_f(x):
    return x[0] ** 2 + x[1] ** 2 + x[2] ** 2


def _bt8_c(x):
    return torch.stack([x[0] - x[3] ** 2 + x[1] ** 2 - 1.0, x[0] ** 2 + x[1] ** 2 - x[4] ** 2 - 1.0])


def _bt9_f(x):
    return -x[0]


def _bt9_c(x):
    return torch.stack([x[1] - x[0] ** 3 - x[2] ** 2, x[0] ** 2 - x[1] - x[3] ** 2])


MARATOS_TAU = 1e-6


def _maratos_f(x):
    return -x[0] + MARATOS_TAU * (x[0] ** 2 + x[1] ** 2)


def _maratos_c(x):
    return (x[0] ** 2 + x[1] ** 2 - 1.0).reshape(1)


def _hs40_f(x):
    return -x[0] * x[1] * x[2] * x[3]


def _hs40_c(x):
    return torch.stack([x[0] ** 3 + x[1] ** 2 - 1.0, x[0] ** 2 * x[3] - x[2], x[3] ** 2 - x[1]])


def _hs42_f(x):
    return (x[0] - 1.0) ** 2 + (x[1] - 2.0) ** 2 + (x[2] - 3.0) ** 2 + (x[3] - 4.0) ** 2


def _hs42_c(x):
    return torch.stack([x[0] - 2.0, x[2] ** 2 + x[3] ** 2 - 2.0])


def _hs78_f(x):
    return x[0] * x[1] * x[2] * x[3] * x[4]


def _hs78_c(x):
    return torch.stack([
        (x**2).sum() - 10.0,
        x[1] * x[2] - 5.0 * x[3] * x[4],
        x[0] ** 3 + x[1] ** 3 + 1.0,
    ])


def _hs79_f(x):
    return ((x[0] - 1.0) ** 2 + (x[0] - x[1]) ** 2 + (x[1] - x[2]) ** 2 + (x[2] - x[3]) ** 4
            + (x[3] - x[4]) ** 4)


def _hs79_c(x):
    return torch.stack([
        x[0] + x[1] ** 2 + x[2] ** 3 - 2.0 - 3.0 * SQRT2,
        x[1] - x[2] ** 2 + x[3] + 2.0 - 2.0 * SQRT2,
        x[0] * x[4] - 2.0,
    ])


def _sphere_f(x):
    return 0.5 * (x[0] ** 2 - x[2] ** 2)


def _sphere_c(x):
    return ((x**2).sum() - 1.0).reshape(1)


def _quartic_f(x):
    return 0.5 * x[0] ** 2 - 0.5 * x[1] ** 2 + 0.25 * x[1] ** 4 + 0.5 * x[2] ** 2


def _quartic_c(x):
    return (x[2] - x[0] * x[1]).reshape(1)


_HS40_SOLUTION = (2.0 ** (-1 / 3), 2.0 ** (-1 / 2), 2.0 ** (-11 / 12), 2.0 ** (-1 / 4))

CUTEST_PROBLEMS: dict[str, EqualityConstrainedTestProblem] = {
    p.name: p
    for p in (
        EqualityConstrainedTestProblem("BT4", _bt4_f, _bt4_c, (3.1494, 1.4523, -3.6017),
                                       (3.6319547249, 0.7267306490, -3.3586853738), 3.2890377376, "cutest"),
        EqualityConstrainedTestProblem("BT5", _bt5_f, _bt5_c, (2.0, 2.0, 2.0), (3.5121, 0.21699, 3.5522),
                                       961.7151721, "cutest"),
        EqualityConstrainedTestProblem("BT8", _bt8_f, _bt8_c, (1.0, 1.0, 1.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 0.0),
                                       1.0, "cutest"),
        EqualityConstrainedTestProblem("BT9", _bt9_f, _bt9_c, (2.0, 2.0, 2.0, 2.0), (1.0, 1.0, 0.0, 0.0), -1.0,
                                       "cutest"),
        EqualityConstrainedTestProblem("MARATOS", _maratos_f, _maratos_c, (1.1, 0.1), (1.0, 0.0),
                                       -1.0 + MARATOS_TAU, "cutest"),
        EqualityConstrainedTestProblem("HS39", _bt9_f, _bt9_c, (2.0, 2.0, 2.0, 2.0), (1.0, 1.0, 0.0, 0.0), -1.0,
                                       "cutest"),
        EqualityConstrainedTestProblem("HS40", _hs40_f, _hs40_c, (0.8, 0.8, 0.8, 0.8), _HS40_SOLUTION, -0.25,
                                       "cutest"),
        EqualityConstrainedTestProblem("HS42", _hs42_f, _hs42_c, (1.0, 1.0, 1.0, 1.0),
                                       (2.0, 2.0, 0.6 * SQRT2, 0.8 * SQRT2), 28.0 - 10.0 * SQRT2, "cutest"),
        EqualityConstrainedTestProblem("HS78", _hs78_f, _hs78_c, (-2.0, 1.5, 2.0, -1.0, -1.0),
                                       (-1.717142, 1.595708, 1.827248, -0.7636429, -0.7636435), -2.91970041,
                                       "cutest"),
        EqualityConstrainedTestProblem("HS79", _hs79_f, _hs79_c, (2.0, 2.0, 2.0, 2.0, 2.0),
                                       (1.191127, 1.362603, 1.472818, 1.635017, 1.679081), 0.0787768209, "cutest"),
    )
}

SADDLE_PROBLEMS: dict[str, EqualityConstrainedTestProblem] = {
    p.name: p
    for p in (
        EqualityConstrainedTestProblem("SADDLE_SPHERE", _sphere_f, _sphere_c, (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), -0.5,
                                       "saddle"),
        EqualityConstrainedTestProblem("SADDLE_QUARTIC", _quartic_f, _quartic_c, (0.0, 0.0, 0.0), (0.0, 1.0, 0.0),
                                       -0.25, "saddle"),
    )
}

TEST_PROBLEMS: dict[str, EqualityConstrainedTestProblem] = {**CUTEST_PROBLEMS, **SADDLE_PROBLEMS}


def get_problem(name: str) -> EqualityConstrainedTestProblem:
    """Look a problem up by name (case-insensitive); a ``ValueError`` lists the known names."""
    key = str(name).upper()
    if key not in TEST_PROBLEMS:
        raise ValueError(f"problem must be one of {sorted(TEST_PROBLEMS)}, got {name!r}")
    return TEST_PROBLEMS[key]
