"""Diagonal-Gaussian helpers of the dynamic VAE: reparameterised sampling and the closed-form KL."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gaussian_kl", "reparameterize"]


def reparameterize(mean: Tensor, logvar: Tensor, *, faithful: bool = False, generator: torch.Generator | None = None,
                   noise: Tensor | None = None) -> Tensor:
    """``z = μ + σ ε``, ``ε ~ N(0, I)``; any shape.

    ``σ = exp(logvar / 2)``. ``faithful=True`` reproduces the released CGM-GM code, which uses
    ``σ = 0.5 · exp(logvar)`` (inconsistent with the KL term it trains against). ``noise``: ε drawn by the caller
    (same shape; a sequential sampler draws all its steps' noise in one call), else drawn here from ``generator``.
    """
    std = 0.5 * torch.exp(logvar) if faithful else torch.exp(0.5 * logvar)
    if noise is None:
        noise = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
    elif noise.shape != mean.shape:
        raise ValueError(f"noise must have the mean's shape {tuple(mean.shape)}, got {tuple(noise.shape)}")
    return torch.addcmul(mean, std, noise)


def gaussian_kl(mean_q: Tensor, logvar_q: Tensor, mean_p: Tensor, logvar_p: Tensor) -> Tensor:
    """Elementwise ``KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²))`` (same shape as the inputs; sum it yourself)."""
    return 0.5 * (logvar_p - logvar_q + (torch.exp(logvar_q) + (mean_q - mean_p) ** 2) / torch.exp(logvar_p) - 1.0)
