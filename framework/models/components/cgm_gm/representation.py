"""CGM-GM's time–frequency representation and conditioning vector.

Spectrogram (research note §2.2): ``torch.stft(n_fft=160, hop_length=46, win_length=160)`` with a *rectangular*
window and ``center=True`` turns a 6,000-sample record into 81 frequencies (0–50 Hz, 0.625 Hz apart) × 131 frames;
the model sees ``log10(|STFT| + 1e-10)`` transposed to ``[T=131, F=81]`` and min–max scaled to [0, 1] with one global
range. The phase is kept for the training loss's time-domain term.

Conditioning (the main configuration, ``tcondvar=2``): magnitude, source latitude, source longitude, station
latitude, station longitude, depth, each min–max scaled to [0, 1] with fixed ranges (the SFBA data ranges by
default). Values outside a range are clipped with a warning (logged through the ``logging`` module too).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CONDITION_RANGES",
    "MAIN_CONDITIONS",
    "ConditionScaler",
    "LogSpectrogramScaler",
    "SpectrogramTransform",
]

log = logging.getLogger(__name__)

# The data ranges shipped with the CGM-GM code (note §2.1); rupture distance and azimuth cover the other variants.
CONDITION_RANGES: dict[str, tuple[float, float]] = {
    "magnitude": (1.09, 3.99),
    "source_latitude": (36.7865, 38.5575),
    "source_longitude": (-123.00267, -121.388),
    "station_latitude": (37.25898, 38.24731),
    "station_longitude": (-122.61573, -121.6413),
    "depth": (-0.21, 21.49),
    "rupture_distance": (0.0, 150.0),
    "azimuth": (0.0, 360.0),
}
MAIN_CONDITIONS = ("magnitude", "source_latitude", "source_longitude", "station_latitude", "station_longitude", "depth")


class SpectrogramTransform(torch.nn.Module):
    """STFT / inverse STFT of the representation: waveforms ``[B, L]`` <-> complex spectrograms ``[B, T, F]``.

    Args:
        n_fft: FFT size (also the window length). 160 -> F = 81.
        hop_length: frame step. 46 with L = 6000 -> T = 1 + 6000 // 46 = 131.
        window: "rectangular" (the CGM-GM data STFT) or "hann".
        length: waveform length L restored by the inverse.
    """

    def __init__(self, *, n_fft: int = 160, hop_length: int = 46, window: str = "rectangular",
                 length: int = 6000) -> None:
        super().__init__()
        if window not in ("rectangular", "hann"):
            raise ValueError(f"window must be 'rectangular' or 'hann', got {window!r}")
        for name, value in (("n_fft", n_fft), ("hop_length", hop_length), ("length", length)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if hop_length > n_fft:
            raise ValueError(f"hop_length ({hop_length}) must not exceed n_fft ({n_fft})")
        self.n_fft, self.hop_length, self.length, self.window_name = n_fft, hop_length, length, window
        w = torch.ones(n_fft) if window == "rectangular" else torch.hann_window(n_fft)
        self.register_buffer("window", w, persistent=False)

    @property
    def num_frequencies(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def num_frames(self) -> int:
        return 1 + self.length // self.hop_length

    def forward(self, waveform: Tensor) -> Tensor:
        """``[..., L]`` real -> ``[..., T, F]`` complex."""
        shape = waveform.shape[:-1]
        spec = torch.stft(waveform.reshape(-1, waveform.shape[-1]), n_fft=self.n_fft, hop_length=self.hop_length,
                          win_length=self.n_fft, window=self.window.to(waveform.dtype), center=True,
                          return_complex=True)
        return spec.transpose(-1, -2).reshape(*shape, spec.shape[-1], spec.shape[-2])

    def inverse(self, spectrogram: Tensor, length: int | None = None) -> Tensor:
        """``[..., T, F]`` complex -> ``[..., L]`` real (least-squares overlap-add)."""
        shape = spectrogram.shape[:-2]
        spec = spectrogram.reshape(-1, *spectrogram.shape[-2:]).transpose(-1, -2)
        out = torch.istft(spec, n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.n_fft,
                          window=self.window.to(spec.real.dtype), center=True, length=length or self.length)
        return out.reshape(*shape, out.shape[-1])


class LogSpectrogramScaler:
    """``x = (log10(|S| + floor) − lo) / (hi − lo)`` and back (``|S| = 10^(x (hi−lo) + lo) − floor``)."""

    def __init__(self, log_min: float, log_max: float, floor: float = 1e-10) -> None:
        if not (math.isfinite(log_min) and math.isfinite(log_max)) or log_max <= log_min:
            raise ValueError(f"need finite log_min < log_max, got {log_min!r}, {log_max!r}")
        self.log_min, self.log_max, self.floor = float(log_min), float(log_max), floor

    @staticmethod
    def log_amplitude(spectrogram: Tensor, floor: float = 1e-10) -> Tensor:
        return torch.log10(spectrogram.abs() + floor)

    def normalize(self, spectrogram: Tensor) -> Tensor:
        """Complex ``[..., T, F]`` -> scaled log amplitude in [0, 1] (on the fitted data)."""
        return (self.log_amplitude(spectrogram, self.floor) - self.log_min) / (self.log_max - self.log_min)

    def denormalize(self, x: Tensor) -> Tensor:
        """Scaled log amplitude -> linear amplitude (clamped at 0)."""
        return (10.0 ** (x * (self.log_max - self.log_min) + self.log_min) - self.floor).clamp_min(0.0)


class ConditionScaler:
    """Min–max scaling of named conditioning variables to [0, 1]; out-of-range values are clipped with a warning.

    Args:
        names: the variables, in order (default: the main configuration's six).
        ranges: ``{name: (low, high)}`` overriding ``CONDITION_RANGES``.
    """

    def __init__(self, names: Sequence[str] = MAIN_CONDITIONS,
                 ranges: Mapping[str, Sequence[float]] | None = None) -> None:
        table = dict(CONDITION_RANGES)
        for key, value in (ranges or {}).items():
            if len(value) != 2 or not float(value[0]) < float(value[1]):
                raise ValueError(f"range of {key!r} must be (low, high) with low < high, got {value!r}")
            table[key] = (float(value[0]), float(value[1]))
        unknown = [n for n in names if n not in table]
        if unknown or not names:
            raise ValueError(f"unknown conditioning variables {unknown}; allowed: {sorted(table)}")
        self.names = tuple(names)
        self.low = np.array([table[n][0] for n in self.names])
        self.high = np.array([table[n][1] for n in self.names])

    def __len__(self) -> int:
        return len(self.names)

    def transform(self, columns: Mapping[str, np.ndarray], *, where: str = "data") -> np.ndarray:
        """``[N, C]`` float32 in [0, 1] from the named columns (each ``[N]``)."""
        missing = [n for n in self.names if n not in columns]
        if missing:
            raise ValueError(f"{where}: missing conditioning columns {missing} (have {sorted(columns)})")
        raw = np.stack([np.asarray(columns[n], dtype=np.float64) for n in self.names], axis=-1)
        bad = ~np.isfinite(raw)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(f"{where}: record {row} has a non-finite {self.names[col]} ({raw[row, col]!r})")
        outside = (raw < self.low) | (raw > self.high)
        if outside.any():
            parts = []
            for c in np.flatnonzero(outside.any(0)):
                parts.append(f"{self.names[c]}: {int(outside[:, c].sum())} values in "
                             f"[{raw[:, c].min():.4g}, {raw[:, c].max():.4g}] outside [{self.low[c]:.4g}, "
                             f"{self.high[c]:.4g}]")
            message = f"{where}: conditioning values outside the normalisation ranges were clipped (" + \
                "; ".join(parts) + ")"
            log.warning(message)
            warnings.warn(message, stacklevel=2)
        scaled = (np.clip(raw, self.low, self.high) - self.low) / (self.high - self.low)
        return scaled.astype(np.float32)

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        return np.asarray(scaled) * (self.high - self.low) + self.low
