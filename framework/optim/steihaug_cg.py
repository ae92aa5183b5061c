"""Projected Steihaug–Toint conjugate gradients for the tangential trust-region subproblem.

Approximately solves ``min_t  bᵀt + ½ tᵀ B t   s.t.  G t = 0,  ‖t‖ ≤ Δ`` by CG on the reduced operator ``P B P``
(``P`` the null-space projector of ``G``), starting from ``t = 0``. Every iterate stays in the null space and inside
the ball; the first CG step is the Cauchy step, so the result has at least Cauchy decrease. CG stops on the boundary,
along a direction of non-positive curvature, or when the reduced residual is small (Nocedal & Wright, Alg. 7.2 /
16.2 with the projection as preconditioner).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SteihaugResult", "projected_steihaug_cg", "boundary_root"]


@dataclass
class SteihaugResult:
    """Output of :func:`projected_steihaug_cg`.

    Attributes:
        step: ``t``, shape ``(d,)``, with ``G t = 0`` and ``‖t‖ ≤ Δ``.
        iterations: CG iterations (Hessian-vector products) used.
        termination: "zero_gradient", "converged", "boundary", "negative_curvature" or "max_iterations".
    """

    step: Tensor
    iterations: int
    termination: str


def boundary_root(point: Tensor, direction: Tensor, radius: float) -> float:
    """The ``τ ≥ 0`` with ``‖point + τ·direction‖ = radius`` (``‖point‖ ≤ radius``)."""
    a = float(direction @ direction)
    b = 2.0 * float(point @ direction)
    c = float(point @ point) - radius**2
    if a <= 0.0:
        return 0.0
    disc = max(b * b - 4.0 * a * c, 0.0)
    # Numerically stable positive root of a τ² + b τ + c = 0 with c ≤ 0.
    if b >= 0:
        denom = -b - math.sqrt(disc)
        return (2.0 * c / denom) if denom != 0 else 0.0
    return (-b + math.sqrt(disc)) / (2.0 * a)


def projected_steihaug_cg(
    hess_matvec: Callable[[Tensor], Tensor],
    linear_term: Tensor,
    project: Callable[[Tensor], Tensor],
    radius: float,
    *,
    relative_tolerance: float = 1e-10,
    max_iterations: int | None = None,
) -> SteihaugResult:
    """Projected Steihaug-CG.

    Args:
        hess_matvec: ``v ↦ B v`` for ``v`` of shape ``(d,)``.
        linear_term: ``b``, shape ``(d,)`` (projected internally).
        project: ``v ↦ P v``, the null-space projector of the constraint Jacobian.
        radius: ``Δ ≥ 0``.
        relative_tolerance: stop when ``‖r‖ ≤ relative_tolerance · ‖P b‖``.
        max_iterations: default ``d``.

    Returns:
        :class:`SteihaugResult`.
    """
    d = linear_term.numel()
    max_iterations = d if max_iterations is None else max_iterations
    t = torch.zeros_like(linear_term)
    r = project(linear_term)
    r_norm0 = float(torch.linalg.vector_norm(r))
    if radius <= 0.0 or r_norm0 == 0.0 or not math.isfinite(r_norm0):
        return SteihaugResult(t, 0, "zero_gradient")
    p = -r
    rr = float(r @ r)
    for it in range(1, max_iterations + 1):
        bp = project(hess_matvec(p))
        curvature = float(p @ bp)
        if curvature <= 0.0:
            tau = boundary_root(t, p, radius)
            return SteihaugResult(project(t + tau * p), it, "negative_curvature")
        alpha = rr / curvature
        t_next = t + alpha * p
        if float(torch.linalg.vector_norm(t_next)) >= radius:
            tau = boundary_root(t, p, radius)
            return SteihaugResult(project(t + tau * p), it, "boundary")
        r = r + alpha * bp
        rr_next = float(r @ r)
        t = t_next
        if math.sqrt(rr_next) <= relative_tolerance * r_norm0:
            return SteihaugResult(project(t), it, "converged")
        p = project(-r + (rr_next / rr) * p)
        rr = rr_next
    return SteihaugResult(project(t), max_iterations, "max_iterations")
