"""The Sobolev-norm frequency filter ``(1 + f / f_0)^β`` of Yu et al. (2025), as a :class:`SpectralFilter`.

For rFFT bin ``k`` of an FFT of length ``n_fft`` the normalised frequency is ``f = k / n_fft`` cycles per sample
(0 to ½). The filter multiplies bin k of feature h by ``w[h, k] = (1 + f / f_0)^{β_h}``:

* ``frequency_scale`` ``f_0 = 1`` reproduces the LRA code (``(1 + k / n_fft)^β``; the largest weight is 1.5^β);
* ``f_0 = 1 / (2π)`` gives ``(1 + ω)^β`` with ω in radians per sample, the normalisation of the waves script
  (``(1 + k/10000)^β`` at Δ = 1e-4 on a 2π-long signal).

Modes:

* ``"forward"`` (the paper's): ``y_f = x_f · k_f · w``. It changes the layer's output and, through it, every
  gradient reaching the kernel's parameters (C, Δ, Re A, Im A) by the same weight. β may be learned.
* ``"gradient"`` (EXPERIMENTAL, not in the paper): the forward pass is the plain model; only the gradient that
  flows into the kernel spectrum is multiplied by ``w``. This reweighting is not the gradient of any loss
  ("non-integrable"), so β cannot be learned in this mode.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SobolevSpectralFilter", "sobolev_weights", "FILTER_MODES"]

FILTER_MODES = ("forward", "gradient")


def sobolev_weights(beta: Tensor, n_fft: int, frequency_scale: float = 1.0) -> Tensor:
    """``w [H, F] = (1 + (k / n_fft) / frequency_scale)^β_h`` for rFFT bins ``k = 0..n_fft//2`` and β ``[H]``."""
    dtype = torch.promote_types(beta.dtype, torch.float32)
    bins = torch.arange(n_fft // 2 + 1, device=beta.device, dtype=dtype)
    log_base = torch.log1p(bins / (n_fft * frequency_scale))
    return torch.exp(beta.to(dtype)[:, None] * log_base)


class _ReweightGradient(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by a fixed real weight."""

    @staticmethod
    def forward(ctx, value: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(weight)
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (weight,) = ctx.saved_tensors
        return grad * weight, None


class SobolevSpectralFilter(nn.Module):
    """Per-feature Sobolev filter attached to one filterable layer.

    Args:
        features: H, the number of β values (one per feature).
        beta: initial β (all features), any real number; 0 is the plain layer.
        learnable: β is an ``nn.Parameter`` (trained) rather than a fixed buffer. Only in ``"forward"`` mode.
        frequency_scale: ``f_0 > 0`` in cycles per sample (see the module docstring).
        mode: ``"forward"`` (the paper) or ``"gradient"`` (experimental, gradient-only).
    """

    def __init__(self, *, features: int, beta: float = 0.0, learnable: bool = False, frequency_scale: float = 1.0,
                 mode: str = "forward") -> None:
        super().__init__()
        if not isinstance(features, int) or features < 1:
            raise ValueError(f"features must be a positive integer, got {features!r}")
        if not isinstance(beta, (int, float)) or not math.isfinite(beta):
            raise ValueError(f"beta must be a finite real number, got {beta!r}")
        if not isinstance(frequency_scale, (int, float)) or not frequency_scale > 0:
            raise ValueError(f"frequency_scale must be > 0 (cycles per sample), got {frequency_scale!r}")
        if mode not in FILTER_MODES:
            raise ValueError(f"mode must be one of {list(FILTER_MODES)}, got {mode!r}")
        if learnable and mode == "gradient":
            raise ValueError("a learnable beta needs mode='forward': the gradient-only mode has no loss to learn beta from")
        initial = torch.full((features,), float(beta))
        if learnable:
            self.beta = nn.Parameter(initial)
        else:
            self.register_buffer("beta", initial)
        self.frequency_scale = float(frequency_scale)
        self.mode = mode

    def weights(self, n_fft: int) -> Tensor:
        """``w [H, F]`` for an FFT of length ``n_fft``."""
        return sobolev_weights(self.beta, n_fft, self.frequency_scale)

    def forward(self, x_f: Tensor, k_f: Tensor, n_fft: int) -> Tensor:
        """``x_f``, ``k_f``: broadcastable spectra with H at -2 and F bins last -> filtered product."""
        w = self.weights(n_fft)
        if w.shape[-1] != k_f.shape[-1] or k_f.shape[-2] != w.shape[0]:
            raise ValueError(
                f"spectrum shape {list(k_f.shape)} does not match the filter: expected H={w.shape[0]} at dim -2 and "
                f"{w.shape[-1]} rFFT bins (n_fft={n_fft}) last"
            )
        if self.mode == "forward":
            # (k_f · w) first: a [C, H, F] product instead of a second pass over the [B, C, H, F] spectrum.
            return x_f * (k_f * w)
        return x_f * _ReweightGradient.apply(k_f, w.detach())

    def extra_repr(self) -> str:
        return f"features={self.beta.numel()}, mode={self.mode}, frequency_scale={self.frequency_scale:g}"
