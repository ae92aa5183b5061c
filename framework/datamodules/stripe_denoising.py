"""Image denoising with stripe noise of a chosen frequency, on images flattened row-major into long sequences.

The experiment of "Tuning Frequency Bias of SSMs" (§ denoising): a one-layer SSM is trained to reproduce clean images
(sequence in = sequence out) and tested on images with added stripes ``amplitude · cos(ω · index)``:

* ``vertical`` stripes vary along a row (index = column): in the row-major sequence they oscillate at ω rad/sample,
  a *high* frequency for ω ≈ 3;
* ``horizontal`` stripes vary down the columns (index = row): the sequence sees ω / W rad/sample, a *low* frequency.

A low-frequency-biased model reproduces the image but not the fast vertical stripes (it removes them); a model whose
poles sit at the stripe frequency ("flipped") keeps them. Test batches pair the noisy input with the clean target and
``test_dataloader`` returns ``[test_vertical, test_horizontal]`` (``test_split_names``).

Images (offline): ``"faces"``, the 200 LFW crops of 25×25 shipped with scikit-image (``skimage.data.lfw_subset``: 100
faces, 100 non-faces; the paper used CelebA faces), ``"skimage"``, 64×64 tiles cut from scikit-image's grey sample
images, or any folder of images (``image_folder``). Each image is resized to ``image_height × image_width`` (default
16 × 128, L = 2048: the paper's row width 128, so the stripes sit at the paper's sequence frequencies 2.99 and
0.023 rad/sample), scaled to [-1, 1] as in the paper, and cached with 🤗 datasets.

Batches: ``(input [B, L, C] float32, target [B, L, C] float32)``; C = 1 (grey) or 3.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from framework.base import SplitDataModule
from framework.base.data_files import check_images
from framework.validation import require_choice, require_existing_path, require_in_range, require_non_negative

__all__ = ["StripeDenoising", "generate_denoising_images", "add_stripes", "SOURCES", "DIRECTIONS"]

SOURCES = ("faces", "skimage")
DIRECTIONS = ("vertical", "horizontal")
_SKIMAGE_GREY = ("camera", "moon", "coins", "text", "page", "brick", "grass", "gravel")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _skimage_images(source: str) -> list[np.ndarray]:
    try:
        import skimage.data
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the 'faces' / 'skimage' sources need scikit-image: pip install 'framework[images]'") from error
    if source == "faces":
        return list(skimage.data.lfw_subset())  # 200 × [25, 25] floats in [0, 1]
    tiles = []
    for name in _SKIMAGE_GREY:
        image = getattr(skimage.data, name)().astype(np.float64) / 255.0
        for r in range(0, image.shape[0] - 63, 64):
            for c in range(0, image.shape[1] - 63, 64):
                tiles.append(image[r: r + 64, c: c + 64])
    return tiles


def check_image_folder(folder: Path) -> list[Path]:
    """The folder's image files, after checking there is one and Pillow reads every header (constructor time)."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"image_folder {str(folder)!r} holds no images ({sorted(_IMAGE_SUFFIXES)})")
    check_images("image_folder", files)
    return files


def _folder_images(folder: Path, channels: int) -> list[np.ndarray]:
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    images = []
    for p in check_image_folder(folder):
        try:
            images.append(np.asarray(Image.open(p).convert(mode), dtype=np.float64) / 255.0)
        except OSError as error:  # a truncated image: its header was fine, its pixels are not
            raise ValueError(f"image_folder: {str(p)!r} cannot be decoded ({error})") from None
    return images


def _folder_signature(folder: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            digest.update(f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def generate_denoising_images(*, source: str, folder_signature: str, channels: int, image_height: int,
                              image_width: int, val_fraction: float, test_fraction: float, seed: int
                              ) -> dict[str, np.ndarray]:
    """Columns ``image [N, C, H, W]`` (float32 in [-1, 1]) and ``split [N]`` (0 train, 1 val, 2 test)."""
    images = _skimage_images(source) if source in SOURCES else _folder_images(Path(source), channels)
    batch = []
    for image in images:
        tensor = torch.as_tensor(image, dtype=torch.float32)
        tensor = tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)
        tensor = tensor[:1] if channels == 1 else tensor.expand(3, -1, -1) if tensor.shape[0] == 1 else tensor[:3]
        resized = torch.nn.functional.interpolate(tensor[None], size=(image_height, image_width), mode="bilinear",
                                                  align_corners=False)[0]
        batch.append(resized.clamp(0.0, 1.0) * 2.0 - 1.0)
    stacked = torch.stack(batch).numpy()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(stacked))
    n_val, n_test = max(1, round(val_fraction * len(order))), max(1, round(test_fraction * len(order)))
    split = np.zeros(len(order), dtype=np.int64)
    split[order[:n_val]] = 1
    split[order[n_val: n_val + n_test]] = 2
    return {"image": stacked.astype(np.float32), "split": split}


def add_stripes(images: torch.Tensor, *, direction: str, frequency: float, amplitudes: torch.Tensor) -> torch.Tensor:
    """``images [N, C, H, W]`` plus ``amplitude_n · cos(frequency · index)``; index = column ("vertical") or row."""
    require_choice("direction", direction, DIRECTIONS)
    height, width = images.shape[-2:]
    if direction == "vertical":
        pattern = torch.cos(frequency * torch.arange(width, dtype=torch.float64))[None, :].expand(height, width)
    else:
        pattern = torch.cos(frequency * torch.arange(height, dtype=torch.float64))[:, None].expand(height, width)
    return images + amplitudes.view(-1, 1, 1, 1).to(images.dtype) * pattern.to(images.dtype)


def to_sequence(images: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W] -> [N, H·W, C]`` (row-major scan)."""
    return images.flatten(2).transpose(1, 2).contiguous()


class StripeDenoising(SplitDataModule):
    """Stripe-noise denoising of images read as pixel sequences.

    Args:
        source: ``"faces"`` (scikit-image LFW crops) or ``"skimage"`` (tiles of its grey sample images).
        image_folder: a directory of images used instead of ``source``.
        channels: 1 (grey) or 3 (RGB; grey images are repeated).
        image_height, image_width: resize target; the sequence length is their product.
        stripe_frequency: ω in radians per pixel (the paper: 2.99433).
        max_amplitude: stripe amplitudes are U(0, max_amplitude) per test image (pixels lie in [-1, 1]).
        train_noise: also add stripes to the *training* inputs (both directions, targets stay clean); the paper
            trains on clean images (False).
        val_fraction, test_fraction: random split fractions.
        batch_size, num_workers, seed, cache_dir, pin_memory: see ``FrameworkDataModule``.
    """

    predict_split = "test_vertical"  # predict reads one test direction

    def __init__(self, *, source: str = "faces", image_folder: str | None = None, channels: int = 1,
                 image_height: int = 16, image_width: int = 128, stripe_frequency: float = 2.99433,
                 max_amplitude: float = 0.5, train_noise: bool = False, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, batch_size: int = 32, num_workers: int = 0, seed: int = 0,
                 cache_dir: str | None = None, pin_memory: bool = False) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, cache_dir=cache_dir,
                         pin_memory=pin_memory)
        require_choice("source", source, SOURCES)
        require_choice("channels", channels, (1, 3))
        for name, value in (("image_height", image_height), ("image_width", image_width)):
            if not isinstance(value, int) or value < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
        require_in_range("stripe_frequency", stripe_frequency, 0.0, math.pi, low_inclusive=False)
        require_non_negative("max_amplitude", max_amplitude)
        require_in_range("val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        require_in_range("test_fraction", test_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        if val_fraction + test_fraction >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
        self.image_folder = str(require_existing_path("image_folder", image_folder, kind="dir")) if image_folder else None
        if self.image_folder:
            check_image_folder(Path(self.image_folder))
        self.source, self.channels = source, channels
        self.image_height, self.image_width = image_height, image_width
        self.stripe_frequency, self.max_amplitude, self.train_noise = float(stripe_frequency), float(max_amplitude), train_noise
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.test_split_names = tuple(f"test_{d}" for d in DIRECTIONS)
        self.datasets: dict[str, TensorDataset] = {}

    @property
    def seq_len(self) -> int:
        return self.image_height * self.image_width

    def stripe_sequence_frequency(self, direction: str) -> float:
        """The stripes' frequency in the flattened sequence, radians per sample."""
        return self.stripe_frequency if direction == "vertical" else self.stripe_frequency / self.image_width

    def _load(self):
        folder = Path(self.image_folder) if self.image_folder else None
        return self.cached("stripe-denoising", generate_denoising_images, version=1,
                           source=str(folder) if folder else self.source,
                           folder_signature=_folder_signature(folder) if folder else "", channels=self.channels,
                           image_height=self.image_height, image_width=self.image_width,
                           val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed)

    def prepare_data(self) -> None:
        self._load()

    def _noisy(self, images: torch.Tensor, direction: str, offset: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 7919 + offset)
        amplitudes = torch.rand(len(images), generator=generator) * self.max_amplitude
        return add_stripes(images, direction=direction, frequency=self.stripe_frequency, amplitudes=amplitudes)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        data = self._load()[:]
        images = torch.as_tensor(np.asarray(data["image"], dtype=np.float32))
        split = torch.as_tensor(np.asarray(data["split"]))
        train, val, test = images[split == 0], images[split == 1], images[split == 2]
        if self.train_noise:
            half = len(train) // 2
            noisy = torch.cat([self._noisy(train[:half], "vertical", 1), self._noisy(train[half:], "horizontal", 2)])
        else:
            noisy = train
        self.datasets["train"] = TensorDataset(to_sequence(noisy), to_sequence(train))
        self.datasets["val"] = TensorDataset(to_sequence(val), to_sequence(val))
        for i, direction in enumerate(DIRECTIONS):
            self.datasets[f"test_{direction}"] = TensorDataset(to_sequence(self._noisy(test, direction, 10 + i)),
                                                               to_sequence(test))

    def test_dataloader(self):
        return [self.split_dataloader(name) for name in self.test_split_names]
