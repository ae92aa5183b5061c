"""Linear-Gaussian AR(1) sanity system: ``x_{k+1} = a x_k + q ξ_k``, ``ξ_k ~ N(0, I_d)``.

The optimal one-step forecast is known in closed form: ``x_{k+1} | x_k ~ N(a x_k, q² I)``, so the conditional-mean
forecast has MSE ``q²`` per coordinate and a calibrated ensemble has spread ``q`` (spread–skill ratio 1). The
initial state is drawn from the stationary law N(0, q²/(1 − a²) I). States are laid out as ``[1, h, w]`` frames
with ``h · w = d`` so every forecaster and metric runs on them unchanged.

Output ``[N, T, 1, h, w]`` float32.
"""

from __future__ import annotations

import math

import numpy as np

from framework.validation import require_in_range, require_positive

__all__ = ["simulate_linear_ar1", "ar1_optimal_forecast"]


def simulate_linear_ar1(*, num_trajectories: int, num_frames: int, height: int = 4, width: int = 4,
                        coefficient: float = 0.9, noise_std: float = 0.1, seed: int = 0) -> np.ndarray:
    """Trajectories ``[N, T, 1, height, width]`` of the stationary AR(1) process."""
    require_in_range("coefficient", coefficient, -1.0, 1.0, low_inclusive=False, high_inclusive=False)
    require_positive("noise_std", noise_std)
    rng = np.random.default_rng(seed)
    d = (num_trajectories, 1, height, width)
    x = rng.standard_normal(d) * noise_std / math.sqrt(1 - coefficient**2)
    frames = [x]
    for _ in range(num_frames - 1):
        x = coefficient * x + noise_std * rng.standard_normal(d)
        frames.append(x)
    return np.stack(frames, axis=1).astype(np.float32)


def ar1_optimal_forecast(last: np.ndarray, *, lead: int, coefficient: float, noise_std: float) -> tuple[np.ndarray, float]:
    """Mean ``a^lead · last`` and standard deviation ``q √(Σ_{j<lead} a^{2j})`` of ``x_{k+lead} | x_k``."""
    if not isinstance(lead, int) or lead < 1:
        raise ValueError(f"lead must be a positive integer, got {lead!r}")
    var = noise_std**2 * sum(coefficient ** (2 * j) for j in range(lead))
    return coefficient**lead * last, math.sqrt(var)
