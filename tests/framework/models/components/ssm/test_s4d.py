"""S4D kernel and layer against direct evaluations: the ZOH recurrence, the transfer function, convolution by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import signal

from framework.models.components.ssm import S4D, S4DKernel


def _recurrence_impulse_response(kernel: S4DKernel, length: int) -> torch.Tensor:
    """Run x_t = e^{ΔA} x_{t-1} + (e^{ΔA}-1)/A · u_t, y_t = 2 Re C x_t on a unit impulse: [C, H, L]."""
    dt = kernel.dt.detach().double()[:, None]
    a = kernel.a.detach().to(torch.complex128)
    poles = torch.exp(dt * a)
    b_bar = (poles - 1.0) / a
    c = kernel.c_complex.detach().to(torch.complex128)
    state = torch.zeros_like(a)
    out = []
    for t in range(length):
        state = poles * state + b_bar * (1.0 if t == 0 else 0.0)
        out.append(2.0 * (c * state).sum(-1).real)
    return torch.stack(out, dim=-1)


@pytest.mark.parametrize("real_transform", ["exp", "softplus"])
def test_kernel_matches_discretized_recurrence(real_transform):
    torch.manual_seed(0)
    kernel = S4DKernel(d_model=3, state_size=5, channels=2, alpha=3.0, dt_min=1e-2, dt_max=2e-1,
                       real_transform=real_transform)
    expected = _recurrence_impulse_response(kernel, 64)
    torch.testing.assert_close(kernel(64).double(), expected, atol=2e-5, rtol=1e-4)


def test_initialisation_follows_alpha_and_dt_range():
    torch.manual_seed(0)
    kernel = S4DKernel(d_model=200, state_size=6, alpha=7.0, imag_offset=1.3, dt_min=1e-3, dt_max=1e-1)
    a = kernel.a.detach()
    torch.testing.assert_close(a.real, torch.full_like(a.real, -0.5))
    torch.testing.assert_close(a.imag[0], 7.0 * math.pi * (torch.arange(6) + 1.3))
    dt = kernel.dt.detach()
    assert dt.min() >= 1e-3 * (1 - 1e-6) and dt.max() <= 1e-1 * (1 + 1e-6)
    # Log-uniform: the mean of log Δ is the midpoint of the log range (200 draws, loose tolerance).
    assert abs(dt.log().mean().item() - 0.5 * (math.log(1e-3) + math.log(1e-1))) < 0.5
    fixed = S4DKernel(d_model=4, state_size=2, dt_min=1e-4, dt_max=1e-4)
    torch.testing.assert_close(fixed.dt.detach(), torch.full((4,), 1e-4))


def test_transfer_function_matches_fft_of_kernel_and_scipy():
    torch.manual_seed(1)
    kernel = S4DKernel(d_model=2, state_size=3, alpha=2.0, dt_min=0.05, dt_max=0.2)
    length = 6000  # long enough for the kernel to decay (Re ΔA ≈ -0.025 per step at worst)
    spectrum = torch.fft.rfft(kernel(length).double(), n=length)
    bins = torch.tensor([0, 10, 250, 1000, 2999])
    omega = 2 * math.pi * bins.double() / length
    g = kernel.transfer_function(omega)
    torch.testing.assert_close(g, spectrum[..., bins], atol=1e-4 * spectrum.abs().max().item(), rtol=0)
    # scipy: the same discrete system as a rational function of z (feature 0, one complex mode pair).
    poles = kernel.discrete_poles().detach().to(torch.complex128)[0].numpy()
    weights = kernel.discrete_input_weights().detach().to(torch.complex128)[0, 0].numpy()
    total = np.zeros(len(omega), dtype=complex)
    for p, w in zip(poles, weights):
        for pole, weight in ((p, w), (np.conj(p), np.conj(w))):
            _, h = signal.freqz([weight], [1.0, -pole], worN=omega.numpy())
            total += h
    np.testing.assert_allclose(g[0, 0].detach().numpy(), total, rtol=1e-9, atol=1e-9)


def test_layer_equals_direct_convolution_with_d_skip():
    torch.manual_seed(2)
    layer = S4D(d_model=3, state_size=4, channels=2, dt_min=0.01, dt_max=0.1)
    u = torch.randn(2, 40, 3)
    y = layer(u)
    k = layer.kernel(40).detach().double()  # [C, H, L]
    expected = torch.zeros(2, 2, 3, 40, dtype=torch.float64)
    for t in range(40):
        window = u.double().transpose(1, 2)[:, None, :, : t + 1].flip(-1)  # u[t - s], s = 0..t
        expected[..., t] = (k[None, ..., : t + 1] * window).sum(-1)
    expected += layer.d.detach().double()[None, :, :, None] * u.double().transpose(1, 2)[:, None]
    torch.testing.assert_close(y.double(), expected.reshape(2, 6, 40).transpose(1, 2), atol=1e-4, rtol=1e-4)


def test_bidirectional_adds_an_anticausal_kernel_over_future_samples():
    torch.manual_seed(3)
    layer = S4D(d_model=2, state_size=3, bidirectional=True, dt_min=0.01, dt_max=0.1)
    length = 16
    u = torch.randn(1, length, 2)
    y = layer(u).double()[0].T  # [H, L]
    k = layer.kernel(length).detach().double()
    forward, backward = k[0], k[1]
    x = u.double()[0].T
    expected = torch.zeros(2, length, dtype=torch.float64)
    for t in range(length):
        expected[:, t] = (forward[:, : t + 1] * x[:, : t + 1].flip(-1)).sum(-1)
        future = x[:, t + 1:]
        expected[:, t] += (backward[:, : future.shape[-1]] * future).sum(-1)
    expected += layer.d.detach().double()[0][:, None] * x
    torch.testing.assert_close(y, expected, atol=1e-4, rtol=1e-4)


def test_causality_of_unidirectional_layer():
    torch.manual_seed(4)
    layer = S4D(d_model=2, state_size=3)
    u = torch.randn(1, 20, 2)
    u2 = u.clone()
    u2[:, 12:] += 5.0
    torch.testing.assert_close(layer(u)[:, :12], layer(u2)[:, :12])


def test_shapes_dtypes_and_bf16_autocast():
    torch.manual_seed(5)
    layer = S4D(d_model=4, state_size=8, channels=3, bidirectional=True)
    u = torch.randn(2, 32, 4)
    y = layer(u)
    assert y.shape == (2, 32, 12) and y.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_bf16 = layer(u.bfloat16())
    assert y_bf16.dtype == torch.float32  # FFTs run in float32 under autocast
    torch.testing.assert_close(y_bf16, y, atol=0.1, rtol=0.05)  # only the bf16 rounding of u differs
    y_bf16.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    assert layer.kernel.c.grad.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dt_min=0.0, dt_max=0.1), "Δ range must be positive"),
        (dict(dt_min=-1e-3, dt_max=0.1), "Δ range must be positive"),
        (dict(dt_min=0.1, dt_max=0.01), "dt_min must be <= dt_max"),
        (dict(alpha=0.0), "alpha"),
        (dict(alpha=-2.0), "alpha"),
        (dict(state_size=0), "state_size"),
        (dict(real_transform="abs"), "real_transform"),
    ],
)
def test_bad_configuration_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        S4DKernel(d_model=2, **kwargs)


def test_sequence_longer_than_max_length_is_rejected():
    layer = S4D(d_model=2, state_size=2, max_length=32)
    layer(torch.randn(1, 32, 2))
    with pytest.raises(ValueError, match="exceeds the configured maximum max_length=32"):
        layer(torch.randn(1, 33, 2))
    with pytest.raises(ValueError, match=r"expects input \[B, L, H=2\]"):
        layer(torch.randn(1, 10, 3))
