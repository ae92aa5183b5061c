"""Frequency-response probes: a layer's transfer function |G(e^{iω})| and a model's per-frequency error.

``layer_frequency_response`` evaluates the discretised transfer function of every (causal) S4D kernel analytically
(``S4DKernel.transfer_function``) plus the D skip; ``kernel_frequency_response`` does the same numerically, from the
FFT of the materialised kernel, for any filterable layer that exposes ``convolution_kernel(length)``. With a Sobolev
filter attached (forward mode) the effective response is multiplied by the filter weights.
``per_frequency_error`` splits a model's error over rFFT bins of the sequence: ``E[|FFT(prediction - target)|²]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from framework.models.components.ssm.sobolev import SobolevSpectralFilter

__all__ = ["FrequencyResponse", "layer_frequency_response", "kernel_frequency_response", "per_frequency_error",
           "response_figure", "error_figure"]


@dataclass
class FrequencyResponse:
    """``omega [F]`` (radians per sample, 0..π) and ``magnitude [channels, H, F]`` = |G(e^{iω})|."""

    omega: np.ndarray
    magnitude: np.ndarray

    def mean_over_features(self) -> np.ndarray:
        """``[F]``: the magnitude averaged over channels and features."""
        return self.magnitude.reshape(-1, self.magnitude.shape[-1]).mean(axis=0)


@torch.no_grad()
def layer_frequency_response(layer, num_frequencies: int = 512, *, include_d: bool = True,
                             include_filter: bool = True) -> FrequencyResponse:
    """Analytic |G| of an S4D layer (its causal kernels) at ``num_frequencies`` ω in [0, π].

    ``include_d`` adds the D skip; ``include_filter`` multiplies the kernel part by an attached forward-mode Sobolev
    filter (evaluated at ω as the continuous version of its bin weights)."""
    omega = torch.linspace(0.0, float(np.pi), num_frequencies, dtype=torch.float64)
    g = layer.kernel.transfer_function(omega)[: layer.channels].cpu()  # [C, H, F]
    spectral_filter = getattr(layer, "spectral_filter", None)
    if include_filter and isinstance(spectral_filter, SobolevSpectralFilter) and spectral_filter.mode == "forward":
        f = omega / (2 * np.pi)
        beta = spectral_filter.beta.detach().to(torch.float64).cpu()
        g = g * torch.exp(beta[:, None] * torch.log1p(f / spectral_filter.frequency_scale))
    if include_d:
        g = g + layer.d.detach().to(torch.float64).cpu()[..., None]
    return FrequencyResponse(omega=omega.numpy(), magnitude=g.abs().numpy())


@torch.no_grad()
def kernel_frequency_response(layer, length: int) -> FrequencyResponse:
    """|rFFT| of the layer's materialised causal kernel of ``length`` (no D, no filter): bins ω_k = 2πk/length."""
    k = layer.convolution_kernel(length)[..., :length].double().cpu()
    spectrum = torch.fft.rfft(k, n=length)
    omega = 2 * np.pi * np.arange(spectrum.shape[-1]) / length
    return FrequencyResponse(omega=omega, magnitude=spectrum.abs().cpu().numpy())


def per_frequency_error(prediction: Tensor, target: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(omega [F], power [F])``: mean squared magnitude of the rFFT of the error over time (dim 1 of
    ``[B, L]`` or ``[B, L, D]``), averaged over everything else."""
    if prediction.shape != target.shape or prediction.dim() < 2:
        raise ValueError(f"prediction and target must share a shape [B, L, ...], got {list(prediction.shape)} and "
                         f"{list(target.shape)}")
    err = (prediction - target).double()
    spectrum = torch.fft.rfft(err, dim=1, norm="ortho")
    power = spectrum.abs().pow(2).transpose(1, -1).reshape(-1, spectrum.shape[1]).mean(0)
    omega = 2 * np.pi * np.arange(spectrum.shape[1]) / err.shape[1]
    return omega, power.cpu().numpy()


def response_figure(responses: dict[str, FrequencyResponse], *, title: str = "|G(e^{iω})|"):
    """A log-log figure of the feature-averaged |G| (solid) and its 10-90% band across features, per entry."""
    from framework.loggers import new_figure

    fig = new_figure(figsize=(6.5, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for name, response in responses.items():
        omega = response.omega[1:]
        flat = response.magnitude.reshape(-1, response.magnitude.shape[-1])[:, 1:]
        ax.plot(omega, flat.mean(0), label=name)
        ax.fill_between(omega, np.quantile(flat, 0.1, axis=0), np.quantile(flat, 0.9, axis=0), alpha=0.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ω (rad / sample)")
    ax.set_ylabel("|G|")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def error_figure(series: dict[str, tuple[np.ndarray, np.ndarray]], *, xlabel: str, ylabel: str, title: str):
    """Bar-free line plot of per-frequency errors: ``series[name] = (frequencies, errors)`` on log-log axes."""
    from framework.loggers import new_figure

    fig = new_figure(figsize=(6.5, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
