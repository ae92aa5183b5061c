"""Top-k Hessian eigenpairs by power iteration with deflation (PyHessian's ``eigenvalues``).

Each eigenpair starts from a Gaussian vector; every step orthogonalises against the eigenvectors already found,
normalises, sets λ ← vᵀHv and v ← Hv/‖Hv‖, and stops when |λ_k − λ_{k−1}| / (|λ_{k−1}| + 1e-6) < tol or after
``max_iter`` products. Power iteration converges to the eigenvalue of largest *magnitude* (it can be negative).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from framework.validation import require_positive

__all__ = ["EigenPairs", "power_iteration"]


@dataclass
class EigenPairs:
    """Top eigenpairs.

    Attributes:
        values: ``[k]`` eigenvalues, in the order found (descending magnitude).
        vectors: ``[k, P]`` unit eigenvectors.
        iterations: ``[k]`` Hessian-vector products spent on each pair.
        converged: ``[k]`` whether the tolerance was reached before ``max_iter``.
    """

    values: Tensor
    vectors: Tensor
    iterations: list[int]
    converged: list[bool]


def _orthogonalise(v: Tensor, basis: list[Tensor]) -> Tensor:
    for u in basis:
        v = v - (v @ u) * u
    return v


def power_iteration(
    hvp: Callable[[Tensor], Tensor],
    dim: int,
    *,
    top_k: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> EigenPairs:
    """Top-``top_k`` eigenpairs of the operator ``hvp: [P] -> [P]`` (symmetric), P = ``dim``."""
    if not isinstance(top_k, int) or top_k < 1 or top_k > dim:
        raise ValueError(f"top_k must be an integer in [1, {dim}] (the number of parameters), got {top_k!r}")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    require_positive("tol", tol)
    values, vectors, iterations, converged = [], [], [], []
    for _ in range(top_k):
        v = torch.randn(dim, generator=generator, dtype=dtype).to(device)
        v = _orthogonalise(v, vectors)
        v = v / v.norm()
        eigenvalue = None
        done = False
        steps = 0
        for steps in range(1, max_iter + 1):
            hv = _orthogonalise(hvp(v), vectors)
            estimate = float(hv @ v)
            norm = hv.norm()
            if norm == 0:
                done = True  # v lies in the null space of the deflated operator
                eigenvalue = 0.0
                break
            v = hv / norm
            if eigenvalue is not None and abs(estimate - eigenvalue) / (abs(eigenvalue) + 1e-6) < tol:
                eigenvalue = estimate
                done = True
                break
            eigenvalue = estimate
        values.append(eigenvalue)
        vectors.append(v)
        iterations.append(steps)
        converged.append(done)
    return EigenPairs(
        values=torch.tensor(values, dtype=torch.float64),
        vectors=torch.stack(vectors),
        iterations=iterations,
        converged=converged,
    )
