"""Lanczos tridiagonalisation with full re-orthogonalisation, and top-k eigenpairs from its Ritz pairs.

Full re-orthogonalisation (against every previous Lanczos vector, twice) keeps the basis orthonormal in floating
point, as PyHessian's ``density`` does; the memory is ``m × P``. If the Krylov space becomes invariant (β ≈ 0) the
iteration restarts with a random vector orthogonal to the basis and records β = 0 (T splits into blocks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from framework.callbacks.landscape.power_iteration import EigenPairs

__all__ = ["LanczosResult", "lanczos", "lanczos_top_eigenpairs"]


@dataclass
class LanczosResult:
    """Output of :func:`lanczos` after ``m`` steps.

    Attributes:
        alpha: ``[m]`` diagonal of T.
        beta: ``[m-1]`` off-diagonal of T.
        basis: ``[m, P]`` orthonormal Lanczos vectors Q (rows).
    """

    alpha: Tensor
    beta: Tensor
    basis: Tensor

    def tridiagonal(self) -> Tensor:
        """T as a dense ``[m, m]`` float64 matrix."""
        t = torch.diag(self.alpha.double())
        if len(self.beta):
            t += torch.diag(self.beta.double(), 1) + torch.diag(self.beta.double(), -1)
        return t

    def ritz(self) -> tuple[Tensor, Tensor]:
        """Ritz values ``[m]`` (ascending) and the eigenvectors of T ``[m, m]`` (columns)."""
        values, vectors = torch.linalg.eigh(self.tridiagonal())
        return values, vectors


def lanczos(
    hvp: Callable[[Tensor], Tensor],
    start: Tensor,
    steps: int,
    *,
    generator: torch.Generator | None = None,
) -> LanczosResult:
    """``steps`` Lanczos iterations of the symmetric operator ``hvp: [P] -> [P]`` from ``start`` ``[P]``."""
    dim = start.numel()
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"Lanczos steps must be a positive integer, got {steps!r}")
    steps = min(steps, dim)
    basis = torch.empty(steps, dim, dtype=start.dtype, device=start.device)
    alpha = torch.empty(steps, dtype=torch.float64)
    beta = torch.empty(max(steps - 1, 0), dtype=torch.float64)
    basis[0] = start / start.norm()
    for i in range(steps):
        w = hvp(basis[i])
        a = float(w @ basis[i])
        alpha[i] = a
        w = w - a * basis[i]
        if i > 0:
            w = w - beta[i - 1].item() * basis[i - 1]
        for _ in range(2):  # full re-orthogonalisation, twice ("twice is enough")
            w = w - basis[: i + 1].T @ (basis[: i + 1] @ w)
        if i == steps - 1:
            break
        b = float(w.norm())
        scale = float(basis[i].abs().max()) * max(abs(a), 1.0)
        if b <= 1e-10 * max(scale, 1e-30):
            # Invariant subspace: continue from a fresh direction orthogonal to the basis.
            fresh = torch.randn(dim, generator=generator, dtype=start.dtype).to(start.device)
            for _ in range(2):
                fresh = fresh - basis[: i + 1].T @ (basis[: i + 1] @ fresh)
            beta[i] = 0.0
            basis[i + 1] = fresh / fresh.norm()
        else:
            beta[i] = b
            basis[i + 1] = w / b
    return LanczosResult(alpha=alpha, beta=beta, basis=basis)


def lanczos_top_eigenpairs(
    hvp: Callable[[Tensor], Tensor],
    dim: int,
    *,
    top_k: int = 1,
    steps: int = 100,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> EigenPairs:
    """Top-``top_k`` eigenpairs by magnitude from the Ritz pairs of ``min(steps, dim)`` Lanczos steps."""
    if not isinstance(top_k, int) or top_k < 1 or top_k > dim:
        raise ValueError(f"top_k must be an integer in [1, {dim}] (the number of parameters), got {top_k!r}")
    start = torch.randn(dim, generator=generator, dtype=dtype).to(device)
    result = lanczos(hvp, start, max(steps, top_k), generator=generator)
    values, vectors = result.ritz()
    order = torch.argsort(values.abs(), descending=True)[:top_k]
    ritz_vectors = (vectors[:, order].to(result.basis.device, result.basis.dtype).T @ result.basis)
    ritz_vectors = ritz_vectors / ritz_vectors.norm(dim=1, keepdim=True)
    m = len(result.alpha)
    return EigenPairs(values=values[order], vectors=ritz_vectors, iterations=[m] * top_k, converged=[True] * top_k)
