"""The small protocol through which a frequency-domain filter reaches an SSM layer's FFT convolution.

A layer is *filterable* when it

* has an attribute ``spectral_filter`` (``None`` for the plain layer) that a filter may be assigned to, and an
  integer attribute ``filter_features`` (H: how many per-feature filter values it needs), and
* computes its long convolution in the frequency domain and forms the product of the input's and the kernel's
  spectra through :func:`frequency_product` (or does exactly what it does: ``x_f * k_f`` when the filter is
  ``None``, ``spectral_filter(x_f, k_f, n_fft)`` otherwise), *before* adding any skip (D) term, which stays
  unfiltered.

Spectra follow ``torch.fft.rfft(..., n=n_fft)`` along the last dimension: ``x_f`` and ``k_f`` broadcast against each
other, have the feature dimension H at position -2 and the F = n_fft // 2 + 1 frequency bins last. A minimal user
layer::

    class MyConv(nn.Module):
        def __init__(self, h, length):
            super().__init__()
            self.k = nn.Parameter(torch.randn(h, length) / length)
            self.spectral_filter = None      # the protocol
            self.filter_features = h         # the protocol
        def forward(self, u):                # [B, H, L]
            n = 2 * u.shape[-1]
            y_f = frequency_product(torch.fft.rfft(u, n=n), torch.fft.rfft(self.k, n=n), n, self.spectral_filter)
            return torch.fft.irfft(y_f, n=n)[..., : u.shape[-1]]
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

__all__ = ["FilterableConvolution", "SpectralFilter", "frequency_product", "filterable_layers"]


@runtime_checkable
class SpectralFilter(Protocol):
    """Replaces the spectral product: ``(x_f, k_f, n_fft) -> y_f`` (broadcast shape, H at -2, bins last)."""

    def __call__(self, x_f: Tensor, k_f: Tensor, n_fft: int) -> Tensor: ...


@runtime_checkable
class FilterableConvolution(Protocol):
    """An SSM / long-convolution layer a spectral filter can be attached to (see the module docstring)."""

    spectral_filter: SpectralFilter | None
    filter_features: int


def frequency_product(x_f: Tensor, k_f: Tensor, n_fft: int, spectral_filter: SpectralFilter | None) -> Tensor:
    """``x_f * k_f``, or the attached filter's version of it."""
    if spectral_filter is None:
        return x_f * k_f
    return spectral_filter(x_f, k_f, n_fft)


def filterable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every sub-module of ``model`` that implements :class:`FilterableConvolution`."""
    return [(name, module) for name, module in model.named_modules()
            if hasattr(module, "spectral_filter") and isinstance(getattr(module, "filter_features", None), int)]
