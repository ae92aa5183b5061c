"""Eigenvalue spectral density (ESD) by stochastic Lanczos quadrature (PyHessian's ``density``, with its PR #23 fix).

Each of ``runs`` runs starts Lanczos from a normalised Rademacher vector, takes ``m`` steps with full
re-orthogonalisation, and keeps the Ritz values λ_j of T with weights w_j = (first component of T's j-th
eigenvector)² (they sum to 1). The density is the average over runs of Σ_j w_j N(x; λ_j, σ²), on a grid of
``num_bins`` points over [min λ − 0.01, max λ + 0.01], with variance σ² = ``sigma_squared`` · max(1, λ_max − λ_min),
renormalised to integrate to 1 on the grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from framework.callbacks.landscape.hutchinson import rademacher
from framework.callbacks.landscape.lanczos import lanczos

__all__ = ["QuadratureNodes", "SpectralDensity", "density_on_grid", "stochastic_lanczos_quadrature"]


@dataclass
class QuadratureNodes:
    """Ritz values and weights of every SLQ run.

    Attributes:
        values: ``[runs, m]`` Ritz values.
        weights: ``[runs, m]`` quadrature weights (each row sums to 1).
    """

    values: Tensor
    weights: Tensor


@dataclass
class SpectralDensity:
    """A smoothed density on a grid.

    Attributes:
        grid: ``[num_bins]`` eigenvalue axis.
        density: ``[num_bins]`` density values (trapezoidal integral over ``grid`` = 1).
        sigma_squared: the kernel variance used.
    """

    grid: Tensor
    density: Tensor
    sigma_squared: float


def stochastic_lanczos_quadrature(
    hvp: Callable[[Tensor], Tensor],
    dim: int,
    *,
    steps: int = 100,
    runs: int = 1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> QuadratureNodes:
    """SLQ nodes and weights for the symmetric operator ``hvp: [P] -> [P]`` with ``min(steps, P)`` steps per run."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"SLQ steps must be a positive integer, got {steps!r}")
    if not isinstance(runs, int) or runs < 1:
        raise ValueError(f"SLQ runs must be a positive integer, got {runs!r}")
    values, weights = [], []
    for _ in range(runs):
        start = rademacher(dim, generator=generator, dtype=dtype, device=device)
        result = lanczos(hvp, start, steps, generator=generator)
        ritz_values, ritz_vectors = result.ritz()
        values.append(ritz_values)
        weights.append(ritz_vectors[0, :] ** 2)  # first components only (the fix of PyHessian PR #23)
    return QuadratureNodes(values=torch.stack(values), weights=torch.stack(weights))


def density_on_grid(nodes: QuadratureNodes, *, num_bins: int = 10_000, sigma_squared: float = 1e-5) -> SpectralDensity:
    """Gaussian-broadened density of ``nodes`` on ``num_bins`` points (PyHessian's ``density_generate``)."""
    if not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}")
    values = nodes.values.double()
    weights = nodes.weights.double()
    low = float(values.min(dim=1).values.mean()) - 0.01
    high = float(values.max(dim=1).values.mean()) + 0.01
    sigma2 = sigma_squared * max(1.0, high - low)
    grid = torch.linspace(low, high, num_bins, dtype=torch.float64)
    density = torch.zeros_like(grid)
    # Chunked over nodes to bound memory at num_bins × chunk.
    flat_values, flat_weights = values.reshape(-1), weights.reshape(-1) / values.shape[0]
    for start in range(0, len(flat_values), 256):
        v = flat_values[start : start + 256]
        w = flat_weights[start : start + 256]
        kernel = torch.exp(-((grid[:, None] - v[None, :]) ** 2) / (2 * sigma2)) / math.sqrt(2 * math.pi * sigma2)
        density += kernel @ w
    total = torch.trapezoid(density, grid)
    if total > 0:
        density = density / total
    return SpectralDensity(grid=grid, density=density, sigma_squared=sigma2)
