"""The waves task of "Tuning Frequency Bias of SSMs": a sum of cosines at very different frequencies; regress the
amplitudes.

``x(t) = Σ_i a_i cos(ω_i t)`` sampled at ``t = ℓ·Δt``, ``Δt = duration / seq_len`` (default: one period of the slowest
wave, 2π, so the rFFT bin of wave i equals ω_i). The target is the amplitude vector ``a``. Training amplitudes lie on
the grid ``{0.1, 0.2, ..., 1.0}^W`` (as in the paper; ``train_size`` subsamples it), validation and test amplitudes
are uniform on [0, 1] (predicting the mean gives a mean absolute error of 0.25 per wave).

The paper uses ω = (1, 16, 256, 4096) with Δt = 1e-4 and L = 62,832; the default here is a scaled-down version that
trains on a CPU: ω = (1, 8, 64, 512) rad / time unit, L = 4096 (Δt = 2π/4096 ≈ 1.5e-3; the fastest wave is 0.79 rad
per sample, the paper's 0.41). Only the amplitudes are stored (cached with 🤗 datasets); the signals are synthesised
per batch from a fixed cosine basis, exactly.

Batches: ``(x [B, L] float32, amplitudes [B, W] float32)``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch.utils.data import Dataset

from framework.base import SplitDataModule
from framework.validation import require_positive

__all__ = ["SSMWaves", "generate_wave_amplitudes"]


def generate_wave_amplitudes(*, num_waves: int, grid_points: int, train_size: int | None, val_size: int,
                             test_size: int, seed: int) -> dict[str, np.ndarray]:
    """Columns ``amplitude [N, W]`` and ``split [N]`` (0 train grid, 1 val, 2 test uniform draws)."""
    rng = np.random.default_rng(seed)
    levels = np.arange(1, grid_points + 1) / grid_points
    grid = np.array(list(itertools.product(levels, repeat=num_waves)), dtype=np.float32)
    if train_size is not None and train_size < len(grid):
        grid = grid[np.sort(rng.choice(len(grid), size=train_size, replace=False))]
    val = rng.uniform(0.0, 1.0, (val_size, num_waves)).astype(np.float32)
    test = rng.uniform(0.0, 1.0, (test_size, num_waves)).astype(np.float32)
    amplitudes = np.concatenate([grid, val, test])
    split = np.concatenate([np.zeros(len(grid)), np.ones(val_size), np.full(test_size, 2)]).astype(np.int64)
    return {"amplitude": amplitudes, "split": split}


class _WaveDataset(Dataset):
    """Amplitudes ``[N, W]`` and a basis ``[W, L]``: item i is ``(a_i @ basis, a_i)``."""

    def __init__(self, amplitudes: torch.Tensor, basis: torch.Tensor) -> None:
        self.amplitudes, self.basis = amplitudes, basis

    def __len__(self) -> int:
        return len(self.amplitudes)

    def __getitem__(self, index: int):
        a = self.amplitudes[index]
        return a @ self.basis, a


class SSMWaves(SplitDataModule):
    """Waves regression data.

    Args:
        frequencies: angular frequencies ω_i (per time unit), all positive and distinct.
        seq_len: L samples per sequence.
        duration: time span of a sequence (Δt = duration / L); 2π puts wave i at rFFT bin ω_i.
        grid_points: amplitude levels per wave in the training grid (10: {0.1, ..., 1.0}; 10^W sequences).
        train_size: subsample of the grid (``None``: the full grid).
        val_size, test_size: uniform-amplitude evaluation sequences.
        batch_size, num_workers, seed, cache_dir, pin_memory: see ``FrameworkDataModule``.
    """

    def __init__(self, *, frequencies: list[float] = (1.0, 8.0, 64.0, 512.0), seq_len: int = 4096,
                 duration: float = 2 * math.pi, grid_points: int = 10, train_size: int | None = None,
                 val_size: int = 1000, test_size: int = 1000, batch_size: int = 64, num_workers: int = 0,
                 seed: int = 0, cache_dir: str | None = None, pin_memory: bool = False) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, cache_dir=cache_dir,
                         pin_memory=pin_memory)
        frequencies = [float(f) for f in frequencies]
        if not frequencies or any(not math.isfinite(f) or f <= 0 for f in frequencies):
            raise ValueError(f"frequencies must be positive numbers, got {frequencies!r}")
        if len(set(frequencies)) != len(frequencies):
            raise ValueError(f"frequencies must be distinct, got {frequencies!r}")
        if not isinstance(seq_len, int) or seq_len < 2:
            raise ValueError(f"seq_len must be an integer >= 2, got {seq_len!r}")
        require_positive("duration", duration)
        nyquist = math.pi * seq_len / duration
        if max(frequencies) >= nyquist:
            raise ValueError(f"frequencies must lie below the Nyquist frequency π·seq_len/duration = {nyquist:.4g}, "
                             f"got max {max(frequencies)!r}")
        for name, value in (("grid_points", grid_points), ("val_size", val_size), ("test_size", test_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if train_size is not None and (not isinstance(train_size, int) or train_size < 1):
            raise ValueError(f"train_size must be a positive integer or None, got {train_size!r}")
        self.frequencies, self.seq_len, self.duration = frequencies, seq_len, float(duration)
        self.grid_points, self.train_size, self.val_size, self.test_size = grid_points, train_size, val_size, test_size
        self.datasets: dict[str, _WaveDataset] = {}

    @property
    def num_outputs(self) -> int:
        return len(self.frequencies)

    @property
    def dt(self) -> float:
        """Sampling step Δt."""
        return self.duration / self.seq_len

    @property
    def output_frequencies(self) -> list[float]:
        """Frequency of each output in radians per sample (ω_i Δt)."""
        return [f * self.dt for f in self.frequencies]

    def basis(self) -> torch.Tensor:
        """``[W, L]``: ``cos(ω_i ℓ Δt)`` (float64 phases, then float32)."""
        t = torch.arange(self.seq_len, dtype=torch.float64) * self.dt
        return torch.cos(torch.tensor(self.frequencies, dtype=torch.float64)[:, None] * t).float()

    def _load(self):
        return self.cached("ssm-waves", generate_wave_amplitudes, version=1, num_waves=len(self.frequencies),
                           grid_points=self.grid_points, train_size=self.train_size, val_size=self.val_size,
                           test_size=self.test_size, seed=self.seed)

    def prepare_data(self) -> None:
        self._load()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        data = self._load()[:]
        amplitudes = torch.as_tensor(np.asarray(data["amplitude"], dtype=np.float32))
        split = torch.as_tensor(np.asarray(data["split"]))
        basis = self.basis()
        for name, code in (("train", 0), ("val", 1), ("test", 2)):
            self.datasets[name] = _WaveDataset(amplitudes[split == code], basis)

