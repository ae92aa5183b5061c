"""DigitsClassification: stratified disjoint splits, the shifted test split, caching, upsampling, image folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.datamodules.digits_classification import DigitsClassification, generate_image_classification


def _setup(**kwargs) -> DigitsClassification:
    dm = DigitsClassification(**kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_splits_are_stratified_disjoint_and_cover_the_digits():
    from sklearn.datasets import load_digits

    dm = _setup(val_fraction=0.2, test_fraction=0.2, shift="gaussian_noise", shift_severity=0.3)
    sizes = {k: len(v) for k, v in dm.datasets.items()}
    assert sizes["train"] + sizes["val"] + sizes["test"] == 1797
    assert sizes["test_shifted"] == sizes["test"]
    assert abs(sizes["test"] - 0.2 * 1797) < 12 and abs(sizes["val"] - 0.2 * 1797) < 12
    for name in ("train", "val", "test"):
        counts = np.bincount(dm.datasets[name].tensors[1].numpy(), minlength=10)
        share = counts / counts.sum()
        assert np.all(np.abs(share - 0.1) < 0.02), (name, share)  # stratified: every class near 10 %
    # Disjoint: every original digit appears once across train/val/test (compare raw pixel rows).
    raw = generate_image_classification(source="digits", folder_signature="", image_size=8, in_channels=1,
                                        val_fraction=0.2, test_fraction=0.2, shift="none", shift_severity=0.0, seed=0)
    np.testing.assert_allclose(np.sort(raw["image"].reshape(1797, -1).sum(1)),
                               np.sort(load_digits().images.reshape(1797, -1).sum(1) / 16.0), rtol=1e-6)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (128, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(float(dm.datasets["train"].tensors[0].mean())) < 1e-4  # standardised with train statistics


def test_shifted_split_is_the_test_split_with_noise():
    dm = _setup(shift="gaussian_noise", shift_severity=0.3)
    test_x, test_y = dm.datasets["test"].tensors
    shifted_x, shifted_y = dm.datasets["test_shifted"].tensors
    assert torch.equal(test_y, shifted_y)
    diff = (shifted_x - test_x).flatten()
    assert 0.05 < float(diff.std()) < 2.0 and not torch.allclose(shifted_x, test_x)
    loaders = dm.test_dataloader()
    assert isinstance(loaders, list) and len(loaders) == 2 and dm.test_split_names == ("test", "test_shifted")


def test_rotation_shift_and_no_shift():
    raw = generate_image_classification(source="digits", folder_signature="", image_size=8, in_channels=1,
                                        val_fraction=0.2, test_fraction=0.2, shift="rotation", shift_severity=90.0,
                                        seed=0)
    test = raw["image"][raw["split"] == 2]
    rotated = raw["image"][raw["split"] == 3]
    # A 90-degree turn (either direction) of an 8x8 image is exact with bilinear interpolation.
    for a, b in zip(test[:20], rotated[:20]):
        assert np.allclose(np.rot90(a, 1, axes=(1, 2)), b, atol=1e-5) or np.allclose(np.rot90(a, -1, axes=(1, 2)), b,
                                                                                     atol=1e-5)
    dm = _setup(shift="none")
    assert "test_shifted" not in dm.test_split_names and not isinstance(dm.test_dataloader(), list)


def test_cache_is_reused(tmp_path, monkeypatch):
    import framework.datamodules.digits_classification as module

    calls = []
    real = module.generate_image_classification

    def counting(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(module, "generate_image_classification", counting)
    for _ in range(2):
        _setup(cache_dir=str(tmp_path), seed=3)
    assert len(calls) == 1
    _setup(cache_dir=str(tmp_path), seed=4)
    assert len(calls) == 2


def test_upsampling_rgb_and_subset():
    dm = _setup(image_size=16, in_channels=3, train_subset=50, batch_size=10)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (10, 3, 16, 16) and len(dm.datasets["train"]) == 50 and dm.input_shape == (3, 16, 16)


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog", "owl"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    dm = _setup(image_folder=str(tmp_path / "imgs"), num_classes=3, image_size=8, in_channels=3,
                cache_dir=str(tmp_path / "cache"), batch_size=4)
    assert sum(len(dm.datasets[s]) for s in ("train", "val", "test")) == 30
    assert dm.datasets["train"].tensors[0].shape[1:] == (3, 8, 8)
    with pytest.raises(ValueError, match="num_classes=10 but the data have 3 classes"):
        _setup(image_folder=str(tmp_path / "imgs"), num_classes=10, cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"shift": "blur"}, ValueError, "shift must be one of"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, ValueError, "val_fraction \\+ test_fraction"),
        ({"test_fraction": 0.0}, ValueError, "test_fraction"),
        ({"in_channels": 2}, ValueError, "in_channels"),
        ({"image_size": 2}, ValueError, "image_size"),
        ({"shift_severity": -1.0}, ValueError, "shift_severity"),
        ({"train_subset": 0}, ValueError, "train_subset"),
        ({"image_folder": "/no/such/folder"}, FileNotFoundError, "image_folder"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        DigitsClassification(**kwargs)
