"""Offline image classification: scikit-learn's 8x8 digits (or a user image folder), with a shifted test split.

Splits are stratified by class and seeded: train / val / test, plus ``test_shifted`` — the test images under a
distribution shift (Gaussian pixel noise or a rotation), the small-scale analogue of evaluating CIFAR-10 models on
CIFAR-10.1. The arrays are generated once and cached (🤗 ``datasets``, written atomically) through
``FrameworkDataModule.cached``.

Batches are ``(image [B, C, H, W] float32, label [B] int64)``; images are standardised with the training split's
per-channel mean and standard deviation. ``test_dataloader`` returns ``[test, test_shifted]`` (named by
``test_split_names``) unless ``shift="none"``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from framework.base import SplitDataModule
from framework.base.data_files import check_images
from framework.validation import require_choice, require_existing_path, require_in_range, require_non_negative

__all__ = ["DigitsClassification", "generate_image_classification", "shift_images"]

SHIFTS = ("gaussian_noise", "rotation", "none")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "test_shifted": 3}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the digits data ship with scikit-learn: pip install scikit-learn") from error
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8] in [0, 1]
    return images, digits.target.astype(np.int64)


def _folder_classes(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _folder_files(folder: Path) -> list[tuple[str, Path]]:
    return [(cls, f) for cls in _folder_classes(folder) for f in sorted((folder / cls).rglob("*"))
            if f.suffix.lower() in _IMAGE_SUFFIXES]


def _folder_signature(folder: Path) -> str:
    """Hash of the folder's file list, sizes and modification times (so edits invalidate the cache)."""
    digest = hashlib.sha256()
    for cls, f in _folder_files(folder):
        stat = f.stat()
        digest.update(f"{cls}/{f.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def check_image_folder(folder: str | Path) -> None:
    """One sub-directory of images per class (>= 2 classes), every image readable by Pillow (headers only); run by
    the DataModules' constructors, before any logger opens a run."""
    folder = Path(folder)
    classes = _folder_classes(folder)
    files = _folder_files(folder)
    if len(classes) < 2 or not files:
        raise ValueError(f"image_folder {str(folder)!r} must hold one sub-directory of images per class "
                         f"(at least 2 classes); found classes {classes} and {len(files)} images")
    check_images("image_folder", [f for _, f in files])


def _load_folder(folder: Path, image_size: int, in_channels: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    check_image_folder(folder)
    classes = _folder_classes(folder)
    files = _folder_files(folder)
    mode = "L" if in_channels == 1 else "RGB"
    images, labels = [], []
    for cls, f in files:
        try:
            with Image.open(f) as img:
                img = img.convert(mode).resize((image_size, image_size), Image.BILINEAR)
                array = np.asarray(img, dtype=np.float32) / 255.0
        except OSError as error:  # a truncated image: its header was fine, its pixels are not
            raise ValueError(f"image_folder: {str(f)!r} cannot be decoded ({error})") from None
        images.append(array[None] if in_channels == 1 else array.transpose(2, 0, 1))
        labels.append(classes.index(cls))
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Split code per sample (0 train, 1 val, 2 test), stratified by class."""
    rng = np.random.default_rng(seed)
    codes = np.zeros(len(labels), dtype=np.int64)
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = int(round(test_fraction * len(idx)))
        n_val = int(round(val_fraction * len(idx)))
        codes[idx[:n_test]] = 2
        codes[idx[n_test : n_test + n_val]] = 1
    return codes


def shift_images(images: np.ndarray, shift: str, severity: float, seed: int) -> np.ndarray:
    """``images [N, C, H, W]`` in [0, 1] under ``shift`` ("gaussian_noise" or "rotation"), seeded."""
    rng = np.random.default_rng(seed + 1)
    if shift == "gaussian_noise":
        return np.clip(images + rng.normal(0.0, severity, images.shape), 0.0, 1.0).astype(np.float32)
    if shift == "rotation":
        from scipy.ndimage import rotate

        # Each image turns by +severity or -severity degrees (random sign), bilinear, corners filled with 0.
        signs = rng.choice([-1.0, 1.0], size=len(images))
        return np.stack([rotate(img, s * severity, axes=(1, 2), reshape=False, order=1, mode="constant", cval=0.0)
                         for img, s in zip(images, signs)]).astype(np.float32)
    raise ValueError(f"shift must be one of {list(SHIFTS)}, got {shift!r}")


def generate_image_classification(
    *, source: str, folder_signature: str, image_size: int, in_channels: int, val_fraction: float,
    test_fraction: float, shift: str, shift_severity: float, seed: int,
) -> dict[str, np.ndarray]:
    """Columns ``image [N, C, S, S]`` (float32 in [0, 1]), ``label [N]``, ``split [N]`` (0 train, 1 val, 2 test,
    3 test_shifted: a shifted copy of the test images)."""
    if source == "digits":
        images, labels = _load_digits()
        if in_channels != 1:
            images = np.repeat(images, in_channels, axis=1)
    else:
        images, labels = _load_folder(Path(source), image_size, in_channels)
    if images.shape[-1] != image_size:
        resized = torch.nn.functional.interpolate(torch.from_numpy(images), size=(image_size, image_size),
                                                  mode="bilinear", align_corners=False)
        images = resized.clamp(0.0, 1.0).numpy()
    codes = _stratified_split(labels, val_fraction, test_fraction, seed)
    test = codes == 2
    shifted = shift_images(images[test], shift, shift_severity, seed) if shift != "none" else images[:0]
    return {
        "image": np.concatenate([images, shifted]).astype(np.float32),
        "label": np.concatenate([labels, labels[test][: len(shifted)]]),
        "split": np.concatenate([codes, np.full(len(shifted), 3, dtype=np.int64)]),
    }


class DigitsClassification(SplitDataModule):
    """scikit-learn digits (1797 images, 8x8, 10 classes) or a user image folder, with a shifted test split.

    Args:
        num_classes: K (10 for digits; the number of class sub-directories for a folder) — checked against the data.
        in_channels: 1 (grey) or 3 (RGB; digits are repeated over channels).
        image_size: side length S; digits are upsampled bilinearly from 8 when S > 8.
        image_folder: a directory with one sub-directory of images per class, used instead of the digits.
        val_fraction, test_fraction: stratified split fractions (the rest trains).
        shift: ``"gaussian_noise"`` (std ``shift_severity`` on [0, 1] pixels), ``"rotation"`` (±``shift_severity``
            degrees) or ``"none"``.
        shift_severity: noise std or rotation angle.
        train_subset: keep only the first n training images (quick runs); ``None`` keeps all.
        batch_size, num_workers, seed, cache_dir, pin_memory: see ``FrameworkDataModule``.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 8,
        image_folder: str | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        shift: str = "gaussian_noise",
        shift_severity: float = 0.3,
        train_subset: int | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, cache_dir=cache_dir,
                         pin_memory=pin_memory)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        require_choice("in_channels", in_channels, (1, 3))
        if not isinstance(image_size, int) or image_size < 4:
            raise ValueError(f"image_size must be an integer >= 4, got {image_size!r}")
        require_in_range("val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        require_in_range("test_fraction", test_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        if val_fraction + test_fraction >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
        require_choice("shift", shift, SHIFTS)
        require_non_negative("shift_severity", shift_severity)
        if train_subset is not None and (not isinstance(train_subset, int) or train_subset < 1):
            raise ValueError(f"train_subset must be a positive integer or None, got {train_subset!r}")
        self.image_folder = str(require_existing_path("image_folder", image_folder, kind="dir")) if image_folder else None
        if self.image_folder:
            check_image_folder(self.image_folder)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.shift = shift
        self.shift_severity = shift_severity
        self.train_subset = train_subset
        self.test_split_names = ("test", "test_shifted") if shift != "none" else ("test",)
        self.datasets: dict[str, TensorDataset] = {}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    def _load(self):
        folder = Path(self.image_folder) if self.image_folder else None
        return self.cached(
            "image-classification",
            generate_image_classification,
            version=1,
            source=str(folder) if folder else "digits",
            folder_signature=_folder_signature(folder) if folder else "",
            image_size=self.image_size,
            in_channels=self.in_channels,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            shift=self.shift,
            shift_severity=float(self.shift_severity),
            seed=self.seed,
        )

    def prepare_data(self) -> None:
        self._load()

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
        train = split == _SPLIT_CODES["train"]
        mean = images[train].mean(dim=(0, 2, 3), keepdim=True)
        std = images[train].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        images = (images - mean) / std
        for name, code in _SPLIT_CODES.items():
            mask = split == code
            x, y = images[mask], labels[mask]
            if name == "train" and self.train_subset is not None:
                x, y = x[: self.train_subset], y[: self.train_subset]
            self.datasets[name] = TensorDataset(x, y)

    def test_dataloader(self):
        loaders = [self.split_dataloader(name) for name in self.test_split_names]
        return loaders if len(loaders) > 1 else loaders[0]
