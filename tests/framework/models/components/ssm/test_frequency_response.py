"""Frequency-response probes: per-frequency error against numpy, responses with an attached filter, figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.models.components.ssm import S4D, SobolevSpectralFilter, layer_frequency_response, per_frequency_error
from framework.models.components.ssm.frequency_response import error_figure, response_figure


def test_per_frequency_error_matches_numpy_and_parseval():
    rng = np.random.default_rng(0)
    prediction, target = rng.normal(size=(3, 32, 2)), rng.normal(size=(3, 32, 2))
    omega, power = per_frequency_error(torch.tensor(prediction), torch.tensor(target))
    spectrum = np.fft.rfft(prediction - target, axis=1, norm="ortho")
    np.testing.assert_allclose(power, (np.abs(spectrum) ** 2).transpose(1, 0, 2).reshape(17, -1).mean(1))
    np.testing.assert_allclose(omega, 2 * np.pi * np.arange(17) / 32)
    with pytest.raises(ValueError, match="share a shape"):
        per_frequency_error(torch.zeros(2, 8), torch.zeros(2, 9))


def test_layer_response_includes_the_forward_filter_and_d():
    torch.manual_seed(0)
    layer = S4D(d_model=3, state_size=4)
    plain = layer_frequency_response(layer, 65, include_d=False)
    layer.spectral_filter = SobolevSpectralFilter(features=3, beta=1.0, frequency_scale=0.5)
    filtered = layer_frequency_response(layer, 65, include_d=False)
    f = plain.omega / (2 * np.pi)
    np.testing.assert_allclose(filtered.magnitude, plain.magnitude * (1 + f / 0.5), rtol=1e-10)
    no_kernel = layer_frequency_response(layer, 65)
    assert no_kernel.magnitude.shape == (1, 3, 65)
    with torch.no_grad():
        layer.kernel.c.zero_()
    np.testing.assert_allclose(layer_frequency_response(layer, 9).magnitude[0],
                               np.abs(layer.d.detach().numpy()[0])[:, None].repeat(9, 1), rtol=1e-6)


def test_figures_render():
    torch.manual_seed(1)
    response = layer_frequency_response(S4D(d_model=2, state_size=3), 33)
    assert len(response_figure({"layer": response}).axes) == 1
    assert len(error_figure({"m": (np.array([0.1, 1.0]), np.array([0.2, 0.1]))}, xlabel="ω", ylabel="e",
                            title="t").axes) == 1


@pytest.mark.gpu
def test_responses_of_a_layer_on_the_gpu_match_the_cpu():
    torch.manual_seed(0)
    layer = S4D(d_model=3, state_size=4)
    layer.spectral_filter = SobolevSpectralFilter(features=3, beta=0.5, frequency_scale=0.5)
    cpu = layer_frequency_response(layer, 33)
    gpu = layer_frequency_response(layer.cuda(), 33)
    np.testing.assert_allclose(gpu.magnitude, cpu.magnitude, rtol=1e-6)
