"""Griffin–Lim phase retrieval in torch (the fast variant with momentum, Perraudin et al. 2013)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from framework.models.components.cgm_gm.representation import SpectrogramTransform

__all__ = ["griffin_lim", "spectral_convergence"]


def spectral_convergence(waveform: Tensor, amplitude: Tensor, transform: SpectrogramTransform) -> Tensor:
    """``‖ |STFT(w)| − A ‖_F / ‖A‖_F`` per record ``[B]``: how consistent a waveform is with a target amplitude."""
    diff = (transform(waveform).abs() - amplitude).flatten(1).norm(dim=1)
    return diff / amplitude.flatten(1).norm(dim=1).clamp_min(1e-30)


def griffin_lim(amplitude: Tensor, transform: SpectrogramTransform, *, n_iter: int = 500, momentum: float = 0.99,
                random_init: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """Waveforms ``[B, L]`` whose STFT magnitude approximates ``amplitude [B, T, F]`` (linear, power 1).

    Each iteration projects onto consistent spectrograms (iSTFT then STFT) and keeps the target magnitude with the
    new phase; ``momentum`` (0 = classic Griffin–Lim) accelerates it. ``random_init`` starts from uniform random
    phases (otherwise zero phase).
    """
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    amplitude = amplitude.to(torch.float32)
    if random_init:
        angle = torch.rand(amplitude.shape, generator=generator, device=amplitude.device) * (2 * math.pi)
        phase = torch.polar(torch.ones_like(amplitude), angle)
    else:
        phase = torch.ones_like(amplitude, dtype=torch.complex64)
    previous = torch.zeros_like(phase)
    for _ in range(n_iter):
        rebuilt = transform(transform.inverse(amplitude * phase))
        phase = rebuilt - (momentum / (1 + momentum)) * previous
        phase = phase / (phase.abs() + 1e-16)
        previous = rebuilt
    return transform.inverse(amplitude * phase)
