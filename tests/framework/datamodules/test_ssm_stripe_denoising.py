"""StripeDenoising: stripes at the stated sequence frequencies, clean targets, folder input, and a test run of the
model on both stripe directions."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

pytest.importorskip("skimage")

from framework.datamodules.stripe_denoising import StripeDenoising, add_stripes, to_sequence  # noqa: E402
from framework.models.ssm_sequence_model import SSMSequenceModel  # noqa: E402


def test_stripes_sit_at_the_stated_sequence_frequencies():
    images = torch.zeros(1, 1, 32, 16)
    for direction in ("vertical", "horizontal"):
        noisy = to_sequence(add_stripes(images, direction=direction, frequency=2.5, amplitudes=torch.ones(1)))[0, :, 0]
        spectrum = np.abs(np.fft.rfft(noisy.numpy()))
        peak = 2 * math.pi * spectrum.argmax() / len(noisy)
        expected = 2.5 if direction == "vertical" else 2.5 / 16
        # Vertical stripes restart every row, so their energy sits on the row harmonics 2πk/W: the peak is the one
        # nearest the stripe frequency (within half a harmonic spacing); horizontal ones peak within one bin.
        tolerance = math.pi / 16 if direction == "vertical" else 2 * math.pi / len(noisy)
        assert abs(peak - expected) <= tolerance + 1e-9


def test_datamodule_pairs_noisy_inputs_with_clean_targets(tmp_path):
    data = StripeDenoising(image_height=16, image_width=8, batch_size=4, max_amplitude=0.4)
    data.setup()
    x, y = data.datasets["train"][:3]
    torch.testing.assert_close(x, y)  # the paper trains on clean images
    assert x.shape == (3, 128, 1) and float(y.min()) >= -1 and float(y.max()) <= 1
    for name in data.test_split_names:
        noisy, clean = data.datasets[name][:]
        diff = noisy - clean
        assert 0 < float(diff.abs().max()) <= 0.4 + 1e-6
    assert data.stripe_sequence_frequency("horizontal") == pytest.approx(2.99433 / 8)


def test_image_folder_source(tmp_path):
    from PIL import Image

    for i in range(6):
        Image.fromarray((np.random.default_rng(i).random((20, 12)) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    data = StripeDenoising(image_folder=str(tmp_path), image_height=10, image_width=6, val_fraction=0.2,
                           test_fraction=0.2)
    data.setup()
    assert sum(len(d) for k, d in data.datasets.items() if k != "test_horizontal") == 6


def test_model_reports_mse_per_stripe_direction(tmp_path):
    data = StripeDenoising(image_height=16, image_width=8, batch_size=8)
    model = SSMSequenceModel(task="regression", num_outputs=1, seq_len=128, d_model=2, n_layers=1, state_size=8,
                             dt_min=1e-2, dt_max=1e-2, learn_a=False, skip=False, norm="none", mixing="none",
                             residual=False, pooling="none")
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    results = trainer.test(model, data)
    assert {"test_vertical/loss", "test_horizontal/loss"} <= {k for r in results for k in r}


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="stripe_frequency"):
        StripeDenoising(stripe_frequency=4.0)
    with pytest.raises(FileNotFoundError, match="image_folder"):
        StripeDenoising(image_folder=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="source"):
        StripeDenoising(source="celeba")
