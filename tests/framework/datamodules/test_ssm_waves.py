"""SSMWaves: signals are the cosine sums of their amplitudes, splits as documented, bad input rejected."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from framework.datamodules.ssm_waves import SSMWaves


def test_batches_are_cosine_sums_with_waves_at_their_fft_bins():
    data = SSMWaves(frequencies=[1.0, 4.0, 16.0], seq_len=128, grid_points=3, val_size=5, test_size=7, batch_size=4)
    data.prepare_data()
    data.setup()
    assert len(data.datasets["train"]) == 27 and len(data.datasets["val"]) == 5 and len(data.datasets["test"]) == 7
    x, a = next(iter(data.train_dataloader()))
    assert x.shape == (4, 128) and a.shape == (4, 3) and x.dtype == torch.float32
    t = np.arange(128) * 2 * math.pi / 128
    expected = sum(a[:, i, None].numpy() * np.cos(f * t) for i, f in enumerate([1.0, 4.0, 16.0]))
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-5)
    # duration 2π: wave i sits exactly at rFFT bin ω_i with magnitude a_i·L/2.
    spectrum = np.abs(np.fft.rfft(x.numpy(), axis=-1))
    np.testing.assert_allclose(spectrum[:, [1, 4, 16]], a.numpy() * 64, rtol=1e-4)
    levels = np.unique(data.datasets["train"].amplitudes.numpy())
    np.testing.assert_allclose(levels, [1 / 3, 2 / 3, 1.0], rtol=1e-6)
    test = data.datasets["test"].amplitudes
    assert test.min() >= 0 and test.max() <= 1
    assert data.output_frequencies == pytest.approx([f * 2 * math.pi / 128 for f in (1.0, 4.0, 16.0)])


def test_train_subset_is_seeded():
    a = SSMWaves(seq_len=64, frequencies=[1.0, 2.0], train_size=10, val_size=2, test_size=2)
    b = SSMWaves(seq_len=64, frequencies=[1.0, 2.0], train_size=10, val_size=2, test_size=2)
    for d in (a, b):
        d.setup()
    torch.testing.assert_close(a.datasets["train"].amplitudes, b.datasets["train"].amplitudes)
    assert len(a.datasets["train"]) == 10


@pytest.mark.parametrize("kwargs, message", [
    (dict(frequencies=[1.0, 600.0], seq_len=1024), "Nyquist"),
    (dict(frequencies=[1.0, -2.0]), "positive"),
    (dict(frequencies=[3.0, 3.0]), "distinct"),
    (dict(seq_len=1), "seq_len"),
    (dict(grid_points=0), "grid_points"),
])
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SSMWaves(**kwargs)
