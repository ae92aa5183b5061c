"""S4D layer: the S4D kernel applied as a long convolution through the FFT, plus the D skip; optionally bidirectional.

Implements the :class:`~framework.models.components.ssm.filter_protocol.FilterableConvolution` protocol, so a Sobolev filter
(``framework.callbacks.sobolev_filter.SobolevFilter``) can be attached to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.models.components.ssm.filter_protocol import SpectralFilter, frequency_product
from framework.models.components.ssm.s4d_kernel import S4DKernel, stacked_s4d_kernels

__all__ = ["S4D"]


class S4D(nn.Module):
    """``u [B, L, H] -> y [B, L, channels·H]`` (float32, also under autocast: FFTs run in float32).

    ``y[..., c, h] = (K_{c,h} * u_h)[t] + D_{c,h} u_h[t]``. Bidirectional: a second kernel runs backwards over the
    sequence (it sees ``u[t+1:]``) and is added, as in S4.

    Args:
        d_model: H.
        channels: output channels per feature.
        bidirectional: add an anti-causal kernel.
        skip: use the D skip term (False: D = 0, frozen).
        **kernel_kwargs: :class:`~framework.models.components.ssm.s4d_kernel.S4DKernel` arguments (``state_size``, ``alpha``,
            ``imag_offset``, ``dt_min``, ``dt_max``, ``real_transform``, ``learn_a``, ``learn_dt``, ``max_length``,
            ``c_init_std``, ``real_init``).
    """

    def __init__(self, *, d_model: int, channels: int = 1, bidirectional: bool = False, skip: bool = True,
                 **kernel_kwargs) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        self.d_model = d_model
        self.channels = channels
        self.bidirectional = bool(bidirectional)
        self.kernel = S4DKernel(d_model=d_model, channels=channels * (2 if bidirectional else 1), **kernel_kwargs)
        # skip=False: no D term (D fixed at 0), so everything passes through the kernel (denoising experiment).
        self.d = nn.Parameter(torch.randn(channels, d_model) if skip else torch.zeros(channels, d_model),
                              requires_grad=skip)
        # FilterableConvolution protocol.
        self.spectral_filter: SpectralFilter | None = None
        self.filter_features = d_model

    @property
    def max_length(self) -> int:
        return self.kernel.max_length

    def convolution_kernel(self, length: int) -> Tensor:
        """The full kernel ``[channels, H, 2L]`` as used by the FFT (causal part, then the anti-causal part)."""
        return self._circular_layout(self.kernel(length), length)

    def _circular_layout(self, k: Tensor, length: int) -> Tensor:
        """``[..., kernel channels, H, L]`` -> ``[..., channels, H, L or 2L]`` (bidirectional: both directions)."""
        if not self.bidirectional:
            return k
        forward, backward = k[..., : self.channels, :, :], k[..., self.channels:, :, :]
        # Circular layout of length 2L: lags 0..L-1 causal; the reversed backward kernel fills lags -L..-1.
        return F.pad(forward, (0, length)) + F.pad(backward.flip(-1), (length, 0))

    @staticmethod
    def kernel_spectra(layers: list[S4D], length: int) -> list[Tensor] | None:
        """The rFFT ``k_f [channels, H, L + 1]`` of every layer's convolution kernel, computed for all layers in one
        batched pass (kernel, layout, FFT); ``None`` unless the layers share sizes and direction. Pass each to
        ``forward(u, kernel_spectrum=...)``: a deep stack then launches the kernel computation once, not per layer."""
        if not layers or len({(l.bidirectional, l.channels, l.d_model) for l in layers}) != 1:
            return None
        kernels = [l.kernel for l in layers]
        if len({(k.state_size, k.real_transform) for k in kernels}) != 1:
            return None
        with torch.autocast(device_type=kernels[0].c.device.type, enabled=False):
            k = layers[0]._circular_layout(stacked_s4d_kernels(kernels, length), length)
            return list(torch.fft.rfft(k, n=2 * length).unbind(0))

    def forward(self, u: Tensor, kernel_spectrum: Tensor | None = None) -> Tensor:
        """``u [B, L, H]`` -> ``[B, L, channels·H]``; ``kernel_spectrum``: this layer's entry of
        :meth:`kernel_spectra` for ``L`` (else the kernel is computed here)."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"S4D expects input [B, L, H={self.d_model}], got {list(u.shape)}")
        length = u.shape[1]
        self.kernel.check_length(length)
        with torch.autocast(device_type=u.device.type, enabled=False):
            x = u.to(torch.promote_types(u.dtype, torch.float32)).transpose(1, 2)  # [B, H, L]
            n_fft = 2 * length
            if kernel_spectrum is None:
                kernel_spectrum = torch.fft.rfft(self.convolution_kernel(length), n=n_fft)  # [C, H, F]
            elif kernel_spectrum.shape != (self.channels, self.d_model, n_fft // 2 + 1):
                raise ValueError(f"kernel_spectrum must be [{self.channels}, {self.d_model}, {n_fft // 2 + 1}] for "
                                 f"length {length}, got {list(kernel_spectrum.shape)}")
            k_f = kernel_spectrum
            x_f = torch.fft.rfft(x, n=n_fft)[:, None]  # [B, 1, H, F]
            y = torch.fft.irfft(frequency_product(x_f, k_f, n_fft, self.spectral_filter), n=n_fft)[..., :length]
            y = y + self.d[None, :, :, None] * x[:, None]  # D skip, never filtered  [B, C, H, L]
            return y.reshape(y.shape[0], self.channels * self.d_model, length).transpose(1, 2)
