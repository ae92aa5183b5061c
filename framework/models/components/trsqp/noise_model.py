"""The simulated stochastic oracle of the TR-StoSQP / TR-IP-SSQP CUTEst experiments.

One sample ``ξ`` gives ``F(x; ξ)`` with gradient ``∇f(x) + ξ_g``, ``ξ_g ~ N(0, σ(I + 11ᵀ))``, value noise
``N(0, σ)`` and (optionally) a symmetric Gaussian Hessian perturbation of entry variance ``σ`` (off-diagonal; ``2σ`` on
the diagonal). ``σ`` is a *variance*, as in the authors' code (``CovM = sigma*(I + ones)``). The mean of ``n`` samples
has ``1/n`` of these covariances, so a batch of size ``n`` is drawn directly as one sample-mean perturbation (cost
independent of ``n``).

The perturbation enters a differentiable loss through terms that vanish in value but not in derivatives:
``F̄(x) = f(x) + ε_f + ε_gᵀ(x − x̂) + ½(x − x̂)ᵀ E (x − x̂)`` with ``x̂ = x.detach()``, so ``F̄ = f + ε_f``,
``∇F̄ = ∇f + ε_g`` and ``∇²F̄ = ∇²f + E`` at the evaluation point — exactly the estimates the codes draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SampleMeanNoise", "GaussianOracleNoise"]


@dataclass
class SampleMeanNoise:
    """The noise of the mean of ``size`` samples.

    Attributes:
        size: number of samples ``n``.
        value: scalar value noise, variance ``σ/n``.
        gradient: shape ``(d,)``, covariance ``σ(I + 11ᵀ)/n``.
        hessian: shape ``(d, d)`` symmetric, or None.
    """

    size: int
    value: Tensor
    gradient: Tensor
    hessian: Tensor | None


class GaussianOracleNoise:
    """Draws :class:`SampleMeanNoise` from a private, checkpointable generator.

    Args:
        dim: number of variables ``d``.
        variance: ``σ ≥ 0``.
        hessian_noise: also perturb Hessians.
        seed: generator seed.
    """

    def __init__(self, dim: int, variance: float, *, hessian_noise: bool = True, seed: int = 0) -> None:
        if not (isinstance(variance, (int, float)) and math.isfinite(variance) and variance >= 0):
            raise ValueError(f"noise_variance must be a non-negative number, got {variance!r}")
        self.dim = dim
        self.variance = float(variance)
        self.hessian_noise = hessian_noise
        self.generator = torch.Generator().manual_seed(int(seed))

    def draw(self, size: int) -> SampleMeanNoise:
        """Noise of a sample mean over ``size ≥ 1`` draws (float64, CPU)."""
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"batch size must be a positive integer, got {size!r}")
        scale = math.sqrt(self.variance / size)
        gen, d = self.generator, self.dim
        value = scale * torch.randn((), generator=gen, dtype=torch.float64)
        gradient = scale * (torch.randn(d, generator=gen, dtype=torch.float64)
                            + torch.randn((), generator=gen, dtype=torch.float64))
        hessian = None
        if self.hessian_noise:
            a = torch.randn(d, d, generator=gen, dtype=torch.float64)
            hessian = scale * (a + a.T) / math.sqrt(2.0)
        return SampleMeanNoise(size, value, gradient, hessian)

    @staticmethod
    def perturb(value: Tensor, x: Tensor, noise: SampleMeanNoise | None) -> Tensor:
        """``f(x)`` plus the noise terms (see the module docstring); ``x`` shape ``(d,)``."""
        if noise is None:
            return value
        delta = x - x.detach()
        noisy = value + noise.value.to(x) + noise.gradient.to(x) @ delta
        if noise.hessian is not None:
            noisy = noisy + 0.5 * delta @ (noise.hessian.to(x) @ delta)
        return noisy

    def get_state(self) -> Tensor:
        return self.generator.get_state()

    def set_state(self, state: Tensor) -> None:
        self.generator.set_state(state)
