"""Models ``B_k`` of the Lagrangian Hessian used by the SQP subproblems: identity, SR1, estimated, averaged estimated.

The four options are the ones in the authors' codes (TR-StoSQP, TR-IP-SSQP: ``Id = 1..4``):

* ``identity`` — ``B = I``;
* ``sr1`` — symmetric-rank-one quasi-Newton on differences of (estimated) *Lagrangian* gradients. (The successor's
  code feeds differences of objective-gradient estimates, which approximates ``∇²f`` and misses the constraints'
  curvature; we use ``∇̄L(x_{k+1}, λ̄_k) − ∇̄L(x_k, λ̄_k)``, the standard SQP choice.)
* ``estimated`` — the Hessian of the sampled Lagrangian ``F(x; batch) + λ̄ᵀc(x)`` at ``x_k`` from a batch of size
  ``N_h`` (exact ``∇²L`` for a deterministic objective);
* ``averaged`` — the mean of the last ``window`` estimated Hessians (the codes use 50).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["HESSIAN_OPTIONS", "HessianModel", "sr1_update", "operator_norm_estimate"]

HESSIAN_OPTIONS = ("identity", "sr1", "estimated", "averaged")


@dataclass
class HessianModel:
    """A symmetric ``(d, d)`` operator with its spectral norm.

    Attributes:
        matvec: ``v ↦ B v`` for ``v`` of shape ``(d,)``.
        norm: ``‖B‖₂`` (exact for dense models, a power-iteration estimate otherwise).
        dense: the matrix, shape ``(d, d)``, when it was formed.
    """

    matvec: Callable[[Tensor], Tensor]
    norm: float
    dense: Tensor | None = None

    @classmethod
    def identity(cls) -> "HessianModel":
        return cls(lambda v: v.clone(), 1.0, None)

    @classmethod
    def from_dense(cls, matrix: Tensor) -> "HessianModel":
        matrix = 0.5 * (matrix + matrix.T)
        return cls(lambda v: matrix @ v, float(torch.linalg.matrix_norm(matrix, ord=2)), matrix)

    @classmethod
    def from_operator(cls, matvec: Callable[[Tensor], Tensor], dim: int, *, like: Tensor) -> "HessianModel":
        return cls(matvec, operator_norm_estimate(matvec, dim, like=like), None)


def operator_norm_estimate(matvec: Callable[[Tensor], Tensor], dim: int, *, like: Tensor, iterations: int = 30) -> float:
    """Largest ``|eigenvalue|`` of a symmetric operator by power iteration from a fixed start (deterministic)."""
    gen = torch.Generator().manual_seed(1729)
    v = torch.randn(dim, generator=gen, dtype=like.dtype).to(like.device)
    v = v / torch.linalg.vector_norm(v)
    estimate = 0.0
    for _ in range(iterations):
        w = matvec(v)
        estimate = float(torch.linalg.vector_norm(w))
        if estimate == 0.0:
            return 0.0
        v = w / estimate
    return estimate


def sr1_update(matrix: Tensor, step: Tensor, gradient_change: Tensor, *, skip_tolerance: float = 1e-8) -> Tensor:
    """SR1 update ``B + (y − Bs)(y − Bs)ᵀ / ((y − Bs)ᵀ s)``; skipped when the denominator is tiny (NW eq. 6.26).

    Shapes: ``matrix (d, d)``, ``step (d,)``, ``gradient_change (d,)``.
    """
    residual = gradient_change - matrix @ step
    denom = float(residual @ step)
    if abs(denom) < skip_tolerance * float(torch.linalg.vector_norm(step)) * float(torch.linalg.vector_norm(residual)):
        return matrix
    if denom == 0.0:
        return matrix
    return matrix + torch.outer(residual, residual) / denom
