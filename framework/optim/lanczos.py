"""Lanczos for the smallest eigenpair of the reduced Lagrangian Hessian ``Zᵀ B Z``.

Works with Hessian-vector products only: the Krylov space of ``P B P`` is built from a start vector in the null space
of ``G`` (``P`` the null-space projector), with full re-orthogonalisation (the reduced dimension of the problems this
optimizer targets is small enough that ``O(k² d)`` is negligible, and it keeps the Ritz values exact to rounding).
The Ritz vector of the smallest Ritz value is returned normalised and in the null space, so its Rayleigh quotient
``ζᵀ B ζ`` is the reported eigenvalue estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["LanczosResult", "smallest_eigenpair"]


@dataclass
class LanczosResult:
    """Smallest Ritz pair of ``P B P`` restricted to the null space.

    Attributes:
        eigenvalue: Rayleigh quotient ``ζᵀ B ζ`` (``nan`` when the null space is trivial).
        eigenvector: ``ζ``, shape ``(d,)``, unit norm, ``G ζ = 0`` (zeros when the null space is trivial).
        iterations: Hessian-vector products used.
        residual: ``‖P B ζ − θ ζ‖``.
    """

    eigenvalue: float
    eigenvector: Tensor
    iterations: int
    residual: float


def smallest_eigenpair(
    hess_matvec: Callable[[Tensor], Tensor],
    project: Callable[[Tensor], Tensor],
    start: Tensor,
    *,
    max_iterations: int,
    tolerance: float = 1e-10,
) -> LanczosResult:
    """Lanczos with full re-orthogonalisation on ``v ↦ P B P v``.

    Args:
        hess_matvec: ``v ↦ B v`` (``v`` shape ``(d,)``).
        project: null-space projector ``v ↦ P v``.
        start: start vector, shape ``(d,)`` (projected internally; a random vector is a safe choice).
        max_iterations: Krylov dimension cap (use ``d − m`` for an exact answer on small problems).
        tolerance: stop when the Krylov space is exhausted (``β ≤ tolerance · ‖T‖``).
    """
    q = project(start)
    norm = float(torch.linalg.vector_norm(q))
    d = start.numel()
    if norm == 0.0 or max_iterations <= 0:
        return LanczosResult(float("nan"), torch.zeros_like(start), 0, float("nan"))
    basis = [q / norm]
    alphas: list[float] = []
    betas: list[float] = []
    scale = 0.0
    for _ in range(min(max_iterations, d)):
        v = basis[-1]
        w = project(hess_matvec(v))
        alpha = float(v @ w)
        alphas.append(alpha)
        Q = torch.stack(basis, dim=1)
        w = w - Q @ (Q.T @ w)
        w = w - Q @ (Q.T @ w)  # twice is enough (Kahan–Parlett)
        w = project(w)
        beta = float(torch.linalg.vector_norm(w))
        scale = max(scale, abs(alpha), beta)
        if beta <= tolerance * max(scale, 1.0) or len(basis) == d:
            break
        betas.append(beta)
        basis.append(w / beta)
    k = len(alphas)
    basis = basis[:k]
    T = torch.diag(torch.tensor(alphas, dtype=start.dtype, device=start.device))
    if k > 1:
        off = torch.tensor(betas[: k - 1], dtype=start.dtype, device=start.device)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    evals, evecs = torch.linalg.eigh(T)
    Q = torch.stack(basis, dim=1)
    zeta = project(Q @ evecs[:, 0])
    zeta = zeta / torch.linalg.vector_norm(zeta)
    bz = project(hess_matvec(zeta))
    theta = float(zeta @ bz)
    residual = float(torch.linalg.vector_norm(bz - theta * zeta))
    return LanczosResult(theta, zeta, k + 1, residual)
