"""LRA-style sequential image classification, offline: the pixels of scikit-learn's digits (or a user image folder,
one sub-directory per class) read one at a time, row-major (sMNIST / sCIFAR style), optionally in a fixed random
order (permuted, psMNIST style).

The images come from ``framework.datamodules.digits_classification.generate_image_classification`` (stratified, seeded splits,
cached with 🤗 datasets); they are standardised with the training split's per-channel statistics. Digits upsampled
to 32 × 32 give L = 1024 (the sCIFAR length); at the native 8 × 8, L = 64.

Batches: ``(pixels [B, L, C] float32, label [B] int64)`` with L = image_size².
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from framework.datamodules.digits_classification import (
    _folder_signature,
    check_image_folder,
    generate_image_classification,
)
from framework.base import SplitDataModule
from framework.validation import require_choice, require_existing_path, require_in_range

__all__ = ["SequentialImages"]


class SequentialImages(SplitDataModule):
    """Pixel-sequence classification.

    Args:
        num_classes: classes (10 for digits; the folder's sub-directories otherwise), checked against the data.
        num_features: channels per step: 1 (grey) or 3 (RGB); linked to the model.
        image_size: side S (digits are upsampled bilinearly from 8); the sequence length is S².
        seq_len: must equal S² (linked to the model's maximum length).
        image_folder: a directory with one sub-directory of images per class, instead of the digits.
        permute: read the pixels in a fixed random order (seeded by ``seed``) instead of row-major.
        val_fraction, test_fraction: stratified split fractions.
        batch_size, num_workers, seed, cache_dir, pin_memory: see ``FrameworkDataModule``.
    """

    def __init__(self, *, num_classes: int = 10, num_features: int = 1, image_size: int = 32, seq_len: int = 1024,
                 image_folder: str | None = None, permute: bool = False, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, batch_size: int = 50, num_workers: int = 0, seed: int = 0,
                 cache_dir: str | None = None, pin_memory: bool = False) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, cache_dir=cache_dir,
                         pin_memory=pin_memory)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        require_choice("num_features", num_features, (1, 3))
        if not isinstance(image_size, int) or image_size < 4:
            raise ValueError(f"image_size must be an integer >= 4, got {image_size!r}")
        if seq_len != image_size * image_size:
            raise ValueError(f"seq_len must equal image_size² = {image_size * image_size}, got {seq_len!r}")
        require_in_range("val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        require_in_range("test_fraction", test_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        if val_fraction + test_fraction >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
        self.image_folder = str(require_existing_path("image_folder", image_folder, kind="dir")) if image_folder else None
        if self.image_folder:
            check_image_folder(self.image_folder)
        self.num_classes, self.num_features, self.image_size, self.seq_len = num_classes, num_features, image_size, seq_len
        self.permute, self.val_fraction, self.test_fraction = permute, val_fraction, test_fraction
        self.datasets: dict[str, TensorDataset] = {}

    def _load(self):
        folder = Path(self.image_folder) if self.image_folder else None
        return self.cached("image-classification", generate_image_classification, version=1,
                           source=str(folder) if folder else "digits",
                           folder_signature=_folder_signature(folder) if folder else "", image_size=self.image_size,
                           in_channels=self.num_features, val_fraction=self.val_fraction,
                           test_fraction=self.test_fraction, shift="none", shift_severity=0.0, seed=self.seed)

    def prepare_data(self) -> None:
        self._load()

    def pixel_order(self) -> torch.Tensor:
        """The order in which pixels are read ``[L]`` (identity unless ``permute``)."""
        if not self.permute:
            return torch.arange(self.seq_len)
        return torch.randperm(self.seq_len, generator=torch.Generator().manual_seed(self.seed + 12345))

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        data = self._load()[:]
        images = torch.as_tensor(np.asarray(data["image"], dtype=np.float32))
        labels = torch.as_tensor(np.asarray(data["label"], dtype=np.int64))
        split = torch.as_tensor(np.asarray(data["split"]))
        found = int(labels.max()) + 1
        if found != self.num_classes:
            raise ValueError(f"num_classes={self.num_classes} but the data have {found} classes")
        train = split == 0
        mean = images[train].mean(dim=(0, 2, 3), keepdim=True)
        std = images[train].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        sequences = ((images - mean) / std).flatten(2).transpose(1, 2)[:, self.pixel_order()].contiguous()
        for name, code in (("train", 0), ("val", 1), ("test", 2)):
            mask = split == code
            self.datasets[name] = TensorDataset(sequences[mask], labels[mask])

