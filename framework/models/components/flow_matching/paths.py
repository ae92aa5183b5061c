"""Conditional Gaussian probability paths for forecasting with flow matching (Lim et al. 2025 and its baselines).

Every path here is an *affine Gaussian* path between the reference state ``z_ref`` (the latest known frame, ``z_k``)
and the target ``z_next`` (``z_{k+1}``)::

    x_t = μ_t + σ_t ε,    μ_t = a_t · z_ref + b_t · z_next,    ε ~ N(0, I)
    u_t(x) = a'_t · z_ref + b'_t · z_next + (σ'_t / σ_t) · (x − μ_t)

so ``u_t`` is the time derivative of ``x_t`` along a fixed ε, and it is computed from the *same* σ that draws
``x_t`` (the public code builds RIVER's ``x_t`` with σ = 1e-7 and its target with σ = 0.01; here one σ serves both).
A path is defined by its coefficient functions; :meth:`ProbabilityPath.sample` and
:meth:`ProbabilityPath.target` follow from them. Time runs from ``t_min`` (source) to ``t_max`` (target); sampling
integrates the learned field over that interval.

Paths (``make_path(name, **options)``; ``PATHS`` lists the names):

- ``"bridge"`` (the paper's): ``a = 1 − t``, ``b = t``, ``σ_t² = σ² t(1−t) + σ_min²``; starts at ``z_ref``.
- ``"lipman_ot"`` (RIVER's noise-to-data OT path): ``a = 0``, ``b = t``, ``σ_t = 1 − (1 − σ_min) t``; starts
  from N(0, I).
- ``"ve_diffusion"``: ``a = 0``, ``b = 1``, ``σ_t = σ_min √((σ_max/σ_min)^{2(1−t)} − 1)``, ``t ∈ [0, 1 − 1e-5]``;
  starts from N(0, σ_t(0)² I). The textbook target ``(σ'/σ)(x − z_next)`` (the public code adds an extra
  ``z_next``, which is not the derivative of its own path).
- ``"vp_diffusion"``: ``T(t) = (1−t) β_min + (1−t)² (β_max − β_min)/2``, ``a = 0``, ``b = e^{−T/2}``,
  ``σ_t = √(1 − e^{−T})``; starts from N(0, I).
- ``"stochastic_interpolant"`` (β_t = t²): ``a = 1 − t``, ``b = t²``, ``σ_t = σ √t (1 − t)``, ``t ∈ [1e-3, 1)``;
  starts at ``z_ref``.
- ``"stochastic_interpolant_linear"`` (β_t = t): as above with ``b = t``.

Shapes: ``z_ref``, ``z_next``, ``x`` and ``ε`` are ``[B, *S]`` (any state shape); ``t`` is ``[B]``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from framework.validation import require_choice, require_in_range, require_positive

__all__ = [
    "PATHS",
    "PathSample",
    "ProbabilityPath",
    "BridgePath",
    "LipmanOTPath",
    "VEDiffusionPath",
    "VPDiffusionPath",
    "StochasticInterpolantPath",
    "make_path",
]


@dataclass
class PathSample:
    """One draw from a path.

    Attributes:
        t: ``[B]`` times.
        x_t: ``[B, *S]`` points on the path.
        u_t: ``[B, *S]`` regression targets (the conditional vector field at ``x_t``).
        mean: ``[B, *S]`` the path mean μ_t.
        sigma: ``[B]`` the path standard deviation σ_t.
    """

    t: Tensor
    x_t: Tensor
    u_t: Tensor
    mean: Tensor
    sigma: Tensor


def _expand(values: Tensor, like: Tensor) -> Tensor:
    """``[B]`` -> ``[B, 1, ..., 1]`` broadcastable against ``like [B, *S]``."""
    return values.reshape(values.shape[0], *([1] * (like.dim() - 1)))


class ProbabilityPath(ABC):
    """A Gaussian path ``x_t = a_t z_ref + b_t z_next + σ_t ε`` on ``t ∈ [t_min, t_max]``.

    Subclasses give the coefficients (:meth:`coefficients`: a, b, σ and their time derivatives) and the source
    (``starts_from_state``: True when sampling starts at ``z_ref``, False when it starts from noise of standard
    deviation :attr:`source_std`).
    """

    #: name under which :func:`make_path` builds the path
    name: str = ""
    #: True: the source is the reference state (plus ``σ_sam`` noise); False: Gaussian noise
    starts_from_state: bool = True
    t_min: float = 0.0
    t_max: float = 1.0

    @abstractmethod
    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(a, b, σ, a', b', σ')`` at ``t [B]``, each ``[B]``."""

    # ------------------------------------------------------------------ derived quantities
    def mean(self, t: Tensor, z_ref: Tensor, z_next: Tensor) -> Tensor:
        """μ_t ``[B, *S]``."""
        a, b, *_ = self.coefficients(t)
        return _expand(a, z_next) * z_ref + _expand(b, z_next) * z_next

    def sigma(self, t: Tensor) -> Tensor:
        """σ_t ``[B]``."""
        return self.coefficients(t)[2]

    def sigma_ratio(self, t: Tensor) -> Tensor:
        """σ'_t / σ_t ``[B]`` (the coefficient of ``x − μ_t`` in the target field)."""
        _, _, s, _, _, ds = self.coefficients(t)
        return ds / s

    def point(self, t: Tensor, z_ref: Tensor, z_next: Tensor, noise: Tensor) -> Tensor:
        """``x_t = μ_t + σ_t ε`` for a given ``noise`` ε ``[B, *S]``."""
        return self.mean(t, z_ref, z_next) + _expand(self.sigma(t), noise) * noise

    def target(self, t: Tensor, x: Tensor, z_ref: Tensor, z_next: Tensor) -> Tensor:
        """The conditional field ``u_t(x) = a' z_ref + b' z_next + (σ'/σ)(x − μ_t)``, ``[B, *S]``."""
        a, b, s, da, db, ds = self.coefficients(t)
        mean = _expand(a, x) * z_ref + _expand(b, x) * z_next
        return _expand(da, x) * z_ref + _expand(db, x) * z_next + _expand(ds / s, x) * (x - mean)

    def sample_time(self, batch_size: int, *, device=None, dtype=None, generator: torch.Generator | None = None) -> Tensor:
        """``t ~ U[t_min, t_max)``, ``[B]``."""
        u = torch.rand(batch_size, generator=generator, device=device, dtype=dtype or torch.float32)
        return self.t_min + (self.t_max - self.t_min) * u

    def sample(self, z_ref: Tensor, z_next: Tensor, *, t: Tensor | None = None,
               generator: torch.Generator | None = None) -> PathSample:
        """Draw ``t`` (unless given), ε and return ``x_t`` with its target ``u_t``."""
        if z_ref.shape != z_next.shape:
            raise ValueError(f"z_ref and z_next must have the same shape, got {tuple(z_ref.shape)} and "
                             f"{tuple(z_next.shape)}")
        if t is None:
            t = self.sample_time(z_next.shape[0], device=z_next.device, dtype=z_next.dtype, generator=generator)
        noise = torch.randn(z_next.shape, generator=generator, device=z_next.device, dtype=z_next.dtype)
        mean = self.mean(t, z_ref, z_next)
        sigma = self.sigma(t)
        x_t = mean + _expand(sigma, noise) * noise
        return PathSample(t=t, x_t=x_t, u_t=self.target(t, x_t, z_ref, z_next), mean=mean, sigma=sigma)

    # ------------------------------------------------------------------ sampling source
    @property
    def source_std(self) -> float:
        """Standard deviation of the noise source (noise-source paths): σ_t at ``t_min``."""
        return float(self.sigma(torch.tensor([self.t_min], dtype=torch.float64))[0])

    def source(self, z_ref: Tensor, *, sigma_sam: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
        """Initial state of the sampler, ``[B, *S]``.

        State-source paths: ``z_ref + σ_sam ε`` (``σ_sam = 0``: every ensemble member starts at ``z_ref``).
        Noise-source paths: ``source_std · ε`` (``σ_sam`` is ignored: the noise *is* the source).
        """
        if not math.isfinite(sigma_sam) or sigma_sam < 0:
            raise ValueError(f"sigma_sam must be a non-negative number, got {sigma_sam!r}")
        if self.starts_from_state:
            if sigma_sam == 0:
                return z_ref.clone()
            noise = torch.randn(z_ref.shape, generator=generator, device=z_ref.device, dtype=z_ref.dtype)
            return z_ref + sigma_sam * noise
        noise = torch.randn(z_ref.shape, generator=generator, device=z_ref.device, dtype=z_ref.dtype)
        return self.source_std * noise

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({options})"


class BridgePath(ProbabilityPath):
    """The paper's path: a Brownian bridge between consecutive states with a variance floor.

    ``μ_t = (1−t) z_ref + t z_next``, ``σ_t² = σ² t(1−t) + σ_min²``, so
    ``σ'_t/σ_t = σ²(1 − 2t) / (2 σ_t²)``. Marginals: N(z_ref, σ_min²) at t = 0, N(z_next, σ_min²) at t = 1.

    Args:
        sigma: σ > 0, the bridge's diffusion scale (paper default 0.01).
        sigma_min: σ_min > 0, the variance floor (paper default 0.001).
    """

    name = "bridge"
    starts_from_state = True

    def __init__(self, *, sigma: float = 0.01, sigma_min: float = 0.001) -> None:
        require_positive("sigma", sigma)
        require_positive("sigma_min", sigma_min)
        self.sigma_value = float(sigma)
        self.sigma_min = float(sigma_min)

    def coefficients(self, t):
        var = self.sigma_value**2 * t * (1 - t) + self.sigma_min**2
        s = var.sqrt()
        ds = self.sigma_value**2 * (1 - 2 * t) / (2 * s)
        return 1 - t, t, s, -torch.ones_like(t), torch.ones_like(t), ds


class LipmanOTPath(ProbabilityPath):
    """RIVER's path (Lipman et al. 2023 OT-CFM): Gaussian noise to the next state.

    ``μ_t = t z_next``, ``σ_t = 1 − (1 − σ_min) t``. Marginals: N(0, I) at t = 0, N(z_next, σ_min²) at t = 1.

    Args:
        sigma_min: σ_min in (0, 1), the terminal noise level (one value for both ``x_t`` and ``u_t``).
    """

    name = "lipman_ot"
    starts_from_state = False

    def __init__(self, *, sigma_min: float = 1e-4) -> None:
        require_in_range("sigma_min", sigma_min, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        self.sigma_min = float(sigma_min)

    def coefficients(self, t):
        zero = torch.zeros_like(t)
        return zero, t, 1 - (1 - self.sigma_min) * t, zero, torch.ones_like(t), torch.full_like(t, -(1 - self.sigma_min))


class VEDiffusionPath(ProbabilityPath):
    """Variance-exploding diffusion path in Lipman et al.'s time convention (noise at t = 0, data at t = 1).

    ``μ_t = z_next``, ``σ_t = σ_min √((σ_max/σ_min)^{2(1−t)} − 1)`` on ``t ∈ [0, t_max]`` (σ_t → 0 at t = 1, so
    ``t_max = 1 − 1e-5`` as in the public code). Marginals: N(z_next, σ_t(0)²) at t = 0 (≈ σ_max), N(z_next,
    σ_t(t_max)²) at the end. The source is N(0, σ_t(0)² I): the data-independent approximation of the t = 0
    marginal, accurate when σ_max dominates the spread of the states.

    Args:
        sigma_min, sigma_max: 0 < σ_min < σ_max (public defaults 0.01 and 0.1).
        t_max: end time in (0, 1).
    """

    name = "ve_diffusion"
    starts_from_state = False

    def __init__(self, *, sigma_min: float = 0.01, sigma_max: float = 0.1, t_max: float = 1 - 1e-5) -> None:
        require_positive("sigma_min", sigma_min)
        require_positive("sigma_max", sigma_max)
        if sigma_max <= sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
        require_in_range("t_max", t_max, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        self.sigma_min, self.sigma_max, self.t_max = float(sigma_min), float(sigma_max), float(t_max)

    def coefficients(self, t):
        log_ratio = math.log(self.sigma_max / self.sigma_min)
        power = torch.exp(2 * (1 - t) * log_ratio)  # (σ_max/σ_min)^{2(1−t)}
        s = self.sigma_min * (power - 1).sqrt()
        ds = -self.sigma_min**2 * log_ratio * power / s  # d/dt of σ_min √(r^{2(1−t)} − 1)
        zero = torch.zeros_like(t)
        return zero, torch.ones_like(t), s, zero, zero, ds


class VPDiffusionPath(ProbabilityPath):
    """Variance-preserving diffusion path (Lipman et al. 2023 form), noise at t = 0, data at t = 1.

    ``T(t) = (1−t) β_min + (1−t)² (β_max − β_min)/2``, ``μ_t = e^{−T/2} z_next``, ``σ_t = √(1 − e^{−T})``.
    Marginals: ≈ N(0, I) at t = 0 (exactly N(e^{−T(0)/2} z_next, 1 − e^{−T(0)})), N(z_next, 0) at t = 1, so
    ``t_max = 1 − 1e-5`` keeps σ_t > 0.

    Args:
        beta_min, beta_max: 0 < β_min < β_max (defaults 0.1 and 20).
        t_max: end time in (0, 1).
    """

    name = "vp_diffusion"
    starts_from_state = False

    def __init__(self, *, beta_min: float = 0.1, beta_max: float = 20.0, t_max: float = 1 - 1e-5) -> None:
        require_positive("beta_min", beta_min)
        require_positive("beta_max", beta_max)
        if beta_max <= beta_min:
            raise ValueError(f"beta_max must exceed beta_min, got beta_min={beta_min!r}, beta_max={beta_max!r}")
        require_in_range("t_max", t_max, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        self.beta_min, self.beta_max, self.t_max = float(beta_min), float(beta_max), float(t_max)

    def coefficients(self, t):
        s1 = 1 - t
        big_t = s1 * self.beta_min + s1**2 * (self.beta_max - self.beta_min) / 2
        d_big_t = -self.beta_min - s1 * (self.beta_max - self.beta_min)
        alpha = torch.exp(-big_t / 2)
        d_alpha = -0.5 * d_big_t * alpha
        decay = torch.exp(-big_t)
        s = (1 - decay).sqrt()
        ds = d_big_t * decay / (2 * s)
        zero = torch.zeros_like(t)
        return zero, alpha, s, zero, d_alpha, ds

    @property
    def source_std(self) -> float:
        return 1.0  # the t = 0 marginal is N(≈0, 1 − e^{−T(0)} ≈ 1); the public code starts from N(0, I)


class StochasticInterpolantPath(ProbabilityPath):
    """Stochastic interpolant between consecutive states (Chen et al. 2024 forecasting form).

    ``μ_t = (1−t) z_ref + β_t z_next`` with ``β_t = t²`` (``exponent=2``) or ``β_t = t`` (``exponent=1``),
    ``σ_t = σ √t (1 − t)`` on ``t ∈ [t_min, t_max]`` (σ_t vanishes at both ends, where σ'/σ is unbounded).
    Marginals: N(z_ref, 0) at t = 0 and N(z_next, 0) at t = 1; the sampler starts at ``z_ref``.

    Args:
        sigma: σ > 0 (public default 0.1).
        exponent: 1 or 2, the power of t in β_t.
        t_min, t_max: 0 < t_min < t_max < 1 (defaults 1e-3 and 1 − 1e-3).
    """

    name = "stochastic_interpolant"
    starts_from_state = True

    def __init__(self, *, sigma: float = 0.1, exponent: int = 2, t_min: float = 1e-3, t_max: float = 1 - 1e-3) -> None:
        require_positive("sigma", sigma)
        require_choice("exponent", exponent, (1, 2))
        require_in_range("t_min", t_min, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        require_in_range("t_max", t_max, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        if t_max <= t_min:
            raise ValueError(f"t_max must exceed t_min, got t_min={t_min!r}, t_max={t_max!r}")
        self.sigma_value, self.exponent = float(sigma), int(exponent)
        self.t_min, self.t_max = float(t_min), float(t_max)
        if exponent == 1:
            self.name = "stochastic_interpolant_linear"

    def coefficients(self, t):
        b = t**self.exponent
        db = self.exponent * t ** (self.exponent - 1)
        s = self.sigma_value * t.sqrt() * (1 - t)
        ds = self.sigma_value * ((1 - t) / (2 * t.sqrt()) - t.sqrt())
        return 1 - t, b, s, -torch.ones_like(t), db, ds


_BUILDERS = {
    "bridge": BridgePath,
    "lipman_ot": LipmanOTPath,
    "ve_diffusion": VEDiffusionPath,
    "vp_diffusion": VPDiffusionPath,
    "stochastic_interpolant": lambda **kw: StochasticInterpolantPath(exponent=2, **kw),
    "stochastic_interpolant_linear": lambda **kw: StochasticInterpolantPath(exponent=1, **kw),
}

#: path names accepted by :func:`make_path`
PATHS: tuple[str, ...] = tuple(_BUILDERS)


def make_path(name: str, **options) -> ProbabilityPath:
    """Build a path by name (one of :data:`PATHS`) with its keyword options (e.g. ``sigma``, ``sigma_min``)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown probability path {name!r}; choose one of {list(PATHS)}")
    try:
        return _BUILDERS[name](**options)
    except TypeError as error:  # an option the path does not take
        raise ValueError(f"bad options for path {name!r}: {options!r} ({error})") from None
