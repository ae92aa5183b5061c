"""Seismological evaluation of generated ground motions (CGM-GM, ``docs/cgm_gm.md``).

Functional core:

* :func:`fourier_amplitude_spectrum` — ``|FFT(v)|·dt`` of velocity records (m), and
  :func:`konno_ohmachi_smooth` — Konno–Ohmachi smoothing (``b = 20``) read at centre frequencies;
* :func:`ergodic_gmm_ln_fas` — the ergodic SFBA ground-motion model of the CGM-GM evaluation (natural-log FAS,
  ``c0 + c1 M + c2 ln R + c3 Z`` at 2 / 5 / 10 / 15 Hz, with its σ);
* :func:`peak_ground_motion` — PGA (m/s², central differences) and PGV (m/s) of velocity records;
* :func:`scaling_slopes` — least-squares ``ln FAS = a + b M + c ln R + d Z`` per frequency;
* :func:`discriminative_score` — TimeGAN-style post-hoc classifier (GRU, hidden 16) on log10 Hann spectrograms of
  real vs generated records, ``|accuracy − 0.5|``.

``torchmetrics`` classes accumulate over batches (``cat`` states, exact under DDP because every statistic is a
function of the set of records): :class:`FASResiduals`, :class:`PeakMotionMedians`, :class:`DiscriminativeScore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = [
    "ERGODIC_SFBA_GMM",
    "DiscriminativeScore",
    "FASResiduals",
    "PeakMotionMedians",
    "discriminative_score",
    "ergodic_gmm_ln_fas",
    "fourier_amplitude_spectrum",
    "gmm_sigma",
    "konno_ohmachi_smooth",
    "konno_ohmachi_weights",
    "log_spectrogram_features",
    "peak_ground_motion",
    "scaling_slopes",
    "smoothed_ln_fas",
]

# Ergodic SFBA FAS model used by CGM-GM (research note §2.5): frequency -> (c0, c1·M, c2·ln R, c3·Z, σ).
ERGODIC_SFBA_GMM: dict[float, tuple[float, float, float, float, float]] = {
    2.0: (-16.2739, 3.0407, -1.4842, 0.0060, 0.72),
    5.0: (-13.5466, 2.6166, -1.7052, 0.0178, 0.77),
    10.0: (-13.4538, 2.2958, -1.9021, 0.0339, 0.81),
    15.0: (-14.4238, 2.1082, -2.0292, 0.0461, 0.87),
}
DEFAULT_FREQUENCIES = (2.0, 5.0, 10.0, 15.0)


def fourier_amplitude_spectrum(waveform: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """``waveform [..., L]`` -> ``(frequencies [L//2+1], |rFFT|·dt [..., L//2+1])`` (float64)."""
    frequencies = torch.fft.rfftfreq(waveform.shape[-1], dt, dtype=torch.float64, device=waveform.device)
    return frequencies, torch.fft.rfft(waveform.double(), dim=-1).abs() * dt


def konno_ohmachi_weights(frequencies: Tensor, centers: Sequence[float] | Tensor, bandwidth: float = 20.0) -> Tensor:
    """Row-normalised Konno–Ohmachi windows ``[K, N]``: ``w = [sin(b log10(f/f_c)) / (b log10(f/f_c))]^4``.

    ``w = 1`` at ``f = f_c``; frequencies ``≤ 0`` get weight 0.
    """
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth!r}")
    f = frequencies.double()
    fc = torch.as_tensor(centers, dtype=torch.float64, device=f.device)
    if (fc <= 0).any():
        raise ValueError(f"centre frequencies must be positive, got {fc.tolist()}")
    positive = f > 0
    x = bandwidth * torch.log10(torch.where(positive, f, torch.ones_like(f))[None, :] / fc[:, None])
    safe = torch.where(x.abs() < 1e-12, torch.ones_like(x), x)
    w = torch.where(x.abs() < 1e-12, torch.ones_like(x), torch.sin(safe) / safe) ** 4
    w = w * positive[None, :]
    return w / w.sum(-1, keepdim=True)


def konno_ohmachi_smooth(fas: Tensor, frequencies: Tensor, centers: Sequence[float] | Tensor,
                         bandwidth: float = 20.0) -> Tensor:
    """Smoothed amplitude at the centres: ``fas [..., N]`` -> ``[..., K]``."""
    return fas.double() @ konno_ohmachi_weights(frequencies, centers, bandwidth).T


def smoothed_ln_fas(waveform: Tensor, dt: float, centers: Sequence[float] = DEFAULT_FREQUENCIES,
                    bandwidth: float = 20.0) -> Tensor:
    """``ln`` of the KO-smoothed velocity FAS (m) at the centres: ``[B, L]`` -> ``[B, K]`` (float64)."""
    frequencies, fas = fourier_amplitude_spectrum(waveform, dt)
    return torch.log(konno_ohmachi_smooth(fas, frequencies, centers, bandwidth).clamp_min(1e-300))


def _gmm_rows(frequencies: Sequence[float]) -> Tensor:
    missing = [f for f in frequencies if float(f) not in ERGODIC_SFBA_GMM]
    if missing:
        raise ValueError(f"the SFBA GMM has coefficients at {sorted(ERGODIC_SFBA_GMM)} Hz only, got {missing}")
    return torch.tensor([ERGODIC_SFBA_GMM[float(f)] for f in frequencies], dtype=torch.float64)


def ergodic_gmm_ln_fas(magnitude: Tensor, rupture_distance: Tensor, depth: Tensor,
                       frequencies: Sequence[float] = DEFAULT_FREQUENCIES) -> Tensor:
    """Median ``ln FAS`` (m) of the ergodic SFBA model: ``[N]`` each -> ``[N, K]``."""
    c = _gmm_rows(frequencies).to(magnitude.device)
    m, r, z = (torch.as_tensor(v, dtype=torch.float64, device=c.device)[:, None]
               for v in (magnitude, rupture_distance, depth))
    return c[:, 0] + c[:, 1] * m + c[:, 2] * torch.log(r) + c[:, 3] * z


def gmm_sigma(frequencies: Sequence[float] = DEFAULT_FREQUENCIES) -> Tensor:
    """The model's total standard deviation (ln units) per frequency ``[K]``."""
    return _gmm_rows(frequencies)[:, 4]


def peak_ground_motion(velocity: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """``velocity [B, L]`` (m/s) -> ``(PGA [B] m/s², PGV [B] m/s)``; acceleration by central differences."""
    acceleration = torch.gradient(velocity.double(), spacing=dt, dim=-1)[0]
    return acceleration.abs().amax(-1), velocity.double().abs().amax(-1)


def scaling_slopes(ln_fas: Tensor, magnitude: Tensor, rupture_distance: Tensor, depth: Tensor) -> Tensor:
    """Least-squares ``ln FAS = a + b M + c ln R + d Z`` per frequency: ``[N, K]`` -> coefficients ``[K, 4]``."""
    design = torch.stack([torch.ones_like(magnitude, dtype=torch.float64), magnitude.double(),
                          torch.log(rupture_distance.double()), depth.double()], dim=-1)
    if design.shape[0] < 4:
        return torch.full((ln_fas.shape[-1], 4), float("nan"), dtype=torch.float64)
    return torch.linalg.lstsq(design, ln_fas.double()).solution.T


class FASResiduals(Metric):
    """KO-smoothed ``ln FAS`` residuals against the ergodic SFBA GMM, and the scaling slopes, over all records.

    ``update(waveform [B, L], magnitude [B], rupture_distance [B], depth [B])``; ``compute()`` returns a dict with,
    per frequency f: ``residual_mean_{f}hz``, ``residual_std_{f}hz`` (ddof 1), ``slope_magnitude_{f}hz`` and
    ``slope_ln_distance_{f}hz`` (the least-squares fit of ``ln FAS`` on M, ln R and Z).

    Args:
        dt: sampling step of the records (s).
        frequencies: centres (Hz), a subset of the GMM's 2 / 5 / 10 / 15.
        bandwidth: Konno–Ohmachi b.
    """

    full_state_update = False

    def __init__(self, *, dt: float = 0.01, frequencies: Sequence[float] = DEFAULT_FREQUENCIES,
                 bandwidth: float = 20.0, **kwargs) -> None:
        super().__init__(**kwargs)
        _gmm_rows(frequencies)
        if dt <= 0:
            raise ValueError(f"dt must be positive, got {dt!r}")
        self.dt, self.frequencies, self.bandwidth = dt, tuple(float(f) for f in frequencies), bandwidth
        for name in ("ln_fas", "magnitude", "distance", "depth"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, waveform: Tensor, magnitude: Tensor, rupture_distance: Tensor, depth: Tensor) -> None:
        if waveform.dim() != 2 or not (len(magnitude) == len(rupture_distance) == len(depth) == len(waveform)):
            raise ValueError(f"need waveform [B, L] and metadata [B]; got {tuple(waveform.shape)}, "
                             f"{len(magnitude)}, {len(rupture_distance)}, {len(depth)}")
        if (rupture_distance <= 0).any():
            raise ValueError("rupture_distance must be positive (km)")
        self.ln_fas.append(smoothed_ln_fas(waveform, self.dt, self.frequencies, self.bandwidth))
        self.magnitude.append(magnitude.double())
        self.distance.append(rupture_distance.double())
        self.depth.append(depth.double())

    def records(self) -> dict[str, Tensor]:
        """All accumulated records: ``ln_fas [N, K]``, ``residual [N, K]``, ``magnitude``, ``distance``, ``depth``."""
        ln_fas, m, r, z = (dim_zero_cat(s) for s in (self.ln_fas, self.magnitude, self.distance, self.depth))
        residual = ln_fas - ergodic_gmm_ln_fas(m, r, z, self.frequencies)
        return {"ln_fas": ln_fas, "residual": residual, "magnitude": m, "distance": r, "depth": z}

    def compute(self) -> dict[str, Tensor]:
        rec = self.records()
        slopes = scaling_slopes(rec["ln_fas"], rec["magnitude"], rec["distance"], rec["depth"])
        out = {}
        for k, f in enumerate(self.frequencies):
            tag = f"{f:g}hz"
            out[f"residual_mean_{tag}"] = rec["residual"][:, k].mean()
            out[f"residual_std_{tag}"] = rec["residual"][:, k].std()
            out[f"slope_magnitude_{tag}"] = slopes[k, 1]
            out[f"slope_ln_distance_{tag}"] = slopes[k, 2]
        return out


class PeakMotionMedians(Metric):
    """Median PGV and PGA per (magnitude, distance) bin (NaN for empty bins).

    ``update(waveform [B, L], magnitude [B], rupture_distance [B])``; ``compute()`` returns
    ``{"pgv_median_M{m0}-{m1}_R{r0}-{r1}": …, "pga_median_…": …, "count_…": …}``.

    Args:
        dt: sampling step (s).
        magnitude_edges, distance_edges: bin edges (left-closed).
    """

    full_state_update = False

    def __init__(self, *, dt: float = 0.01, magnitude_edges: Sequence[float] = (2.0, 2.5, 3.0, 3.5, 4.0),
                 distance_edges: Sequence[float] = (0.0, 20.0, 40.0, 80.0), **kwargs) -> None:
        super().__init__(**kwargs)
        for name, edges in (("magnitude_edges", magnitude_edges), ("distance_edges", distance_edges)):
            if len(edges) < 2 or any(b <= a for a, b in pairwise(edges)):
                raise ValueError(f"{name} must be increasing with at least two edges, got {list(edges)!r}")
        self.dt = dt
        self.magnitude_edges, self.distance_edges = tuple(magnitude_edges), tuple(distance_edges)
        for name in ("pga", "pgv", "magnitude", "distance"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, waveform: Tensor, magnitude: Tensor, rupture_distance: Tensor) -> None:
        pga, pgv = peak_ground_motion(waveform, self.dt)
        self.pga.append(pga)
        self.pgv.append(pgv)
        self.magnitude.append(magnitude.double())
        self.distance.append(rupture_distance.double())

    def bins(self) -> list[tuple[str, Tensor]]:
        """``[(label, mask)]`` over the accumulated records."""
        m, r = dim_zero_cat(self.magnitude), dim_zero_cat(self.distance)
        out = []
        for m0, m1 in pairwise(self.magnitude_edges):
            for r0, r1 in pairwise(self.distance_edges):
                mask = (m >= m0) & (m < m1) & (r >= r0) & (r < r1)
                out.append((f"M{m0:g}-{m1:g}_R{r0:g}-{r1:g}", mask))
        return out

    def compute(self) -> dict[str, Tensor]:
        pga, pgv = dim_zero_cat(self.pga), dim_zero_cat(self.pgv)
        out = {}
        for label, mask in self.bins():
            n = int(mask.sum())
            nan = torch.tensor(float("nan"), dtype=torch.float64, device=pga.device)
            # Median of an even count: mean of the two middle values (numpy's convention, not torch's lower one).
            out[f"pgv_median_{label}"] = pgv[mask].quantile(0.5) if n else nan
            out[f"pga_median_{label}"] = pga[mask].quantile(0.5) if n else nan
            out[f"count_{label}"] = torch.tensor(float(n), dtype=torch.float64, device=pga.device)
        return out


def log_spectrogram_features(waveform: Tensor, *, n_fft: int = 400, hop_length: int = 200) -> Tensor:
    """``log10`` power spectrogram with a Hann window (torchaudio ``Spectrogram`` defaults): ``[B, L]`` -> ``[B, T, F]``."""
    window = torch.hann_window(n_fft, dtype=waveform.dtype, device=waveform.device)
    spec = torch.stft(waveform, n_fft=n_fft, hop_length=hop_length, window=window, center=True, return_complex=True)
    return torch.log10(spec.abs() ** 2 + 1e-20).transpose(1, 2).float()


class _SequenceClassifier(nn.Module):
    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.rnn = nn.GRU(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        _, h = self.rnn(x)
        return self.head(h[-1]).squeeze(-1)


def discriminative_score(real: Tensor, fake: Tensor, *, iterations: int = 2000, batch_size: int = 128,
                         hidden: int = 16, repeats: int = 10, train_fraction: float = 0.8, lr: float = 1e-3,
                         seed: int = 0) -> tuple[float, float]:
    """Post-hoc discriminative score ``|accuracy − 0.5|`` (mean, std over ``repeats``), TimeGAN-style.

    ``real``, ``fake``: feature sequences ``[N, T, F]`` (e.g. :func:`log_spectrogram_features`). Features are
    standardised per channel with the real records' statistics; each repeat draws a fresh 80/20 split of both sets
    and trains a GRU (hidden 16) + linear classifier with Adam for ``iterations`` steps on balanced batches.
    """
    if real.dim() != 3 or fake.shape[1:] != real.shape[1:]:
        raise ValueError(f"real and fake must be [N, T, F] with equal T, F; got {tuple(real.shape)}, "
                         f"{tuple(fake.shape)}")
    if min(len(real), len(fake)) < 4:
        raise ValueError(f"need at least 4 real and 4 fake sequences, got {len(real)} and {len(fake)}")
    mean = real.mean((0, 1), keepdim=True)
    std = real.std((0, 1), keepdim=True).clamp_min(1e-6)
    real, fake = ((real - mean) / std).float(), ((fake - mean) / std).float()
    scores = []
    for repeat in range(repeats):
        generator = torch.Generator().manual_seed(seed * 1000 + repeat)
        torch_state = torch.random.get_rng_state()
        torch.manual_seed(seed * 1000 + repeat)
        model = _SequenceClassifier(real.shape[-1], hidden).to(real.device)
        torch.random.set_rng_state(torch_state)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        splits = []
        for data in (real, fake):
            order = torch.randperm(len(data), generator=generator)
            n_train = max(1, min(len(data) - 1, int(train_fraction * len(data))))
            splits.append((data[order[:n_train]], data[order[n_train:]]))
        half = max(1, batch_size // 2)
        for _ in range(iterations):
            xr = splits[0][0][torch.randint(len(splits[0][0]), (half,), generator=generator)]
            xf = splits[1][0][torch.randint(len(splits[1][0]), (half,), generator=generator)]
            logits = model(torch.cat([xr, xf]))
            labels = torch.cat([torch.ones(half), torch.zeros(half)]).to(logits.device)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            correct = (model(splits[0][1]) > 0).sum() + (model(splits[1][1]) <= 0).sum()
        accuracy = float(correct) / (len(splits[0][1]) + len(splits[1][1]))
        scores.append(abs(accuracy - 0.5))
    values = torch.tensor(scores, dtype=torch.float64)
    return float(values.mean()), float(values.std()) if len(scores) > 1 else 0.0


class DiscriminativeScore(Metric):
    """Accumulates real and generated records; ``compute()`` trains the post-hoc classifier.

    ``update(real [B, L], fake [B', L])`` stores log10 Hann spectrogram features; ``compute()`` returns
    ``{"discriminative_score": mean, "discriminative_score_std": std}``. Settings as :func:`discriminative_score`.
    """

    full_state_update = False

    def __init__(self, *, iterations: int = 2000, batch_size: int = 128, hidden: int = 16, repeats: int = 10,
                 seed: int = 0, n_fft: int = 400, hop_length: int = 200, **kwargs) -> None:
        super().__init__(**kwargs)
        for name, value in (("iterations", iterations), ("batch_size", batch_size), ("hidden", hidden),
                            ("repeats", repeats)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.settings = {"iterations": iterations, "batch_size": batch_size, "hidden": hidden, "repeats": repeats,
                         "seed": seed}
        self.n_fft, self.hop_length = n_fft, hop_length
        self.add_state("real", default=[], dist_reduce_fx="cat")
        self.add_state("fake", default=[], dist_reduce_fx="cat")

    def update(self, real: Tensor, fake: Tensor) -> None:
        self.real.append(log_spectrogram_features(real.float(), n_fft=self.n_fft, hop_length=self.hop_length))
        self.fake.append(log_spectrogram_features(fake.float(), n_fft=self.n_fft, hop_length=self.hop_length))

    def compute(self) -> dict[str, Tensor]:
        with torch.enable_grad(), torch.inference_mode(False):
            mean, std = discriminative_score(dim_zero_cat(self.real).clone(), dim_zero_cat(self.fake).clone(),
                                             **self.settings)
        return {"discriminative_score": torch.tensor(mean), "discriminative_score_std": torch.tensor(std)}
