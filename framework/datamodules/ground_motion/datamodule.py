"""``GroundMotionCatalog``: the CGM-GM DataModule (synthetic SFBA catalog by default, real records optionally).

Batches are dicts of tensors (B records):

* ``spectrogram [B, 131, 81]``: scaled log10 amplitude of the rectangular-window STFT (see ``representation``);
* ``phase [B, 131, 81]``: its phase (for the time-domain loss term);
* ``waveform [B, 6000]``: velocity, m/s;
* ``condition [B, C]``: the conditioning variables scaled to [0, 1] (default the main configuration's six);
* ``magnitude``, ``rupture_distance``, ``depth``, ``source_latitude``, ``source_longitude``, ``station_latitude``,
  ``station_longitude`` ``[B]``: raw metadata for the evaluation.

The log-amplitude range is fitted on the training split (the released code fits it on all records before the
split, a small leak; ``normalization_split="all"`` restores that). Splits: a seeded permutation of the *events*
(records of one event never straddle splits) into train / val / test fractions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from framework.datamodules.ground_motion.catalog import generate_synthetic_catalog
from framework.datamodules.ground_motion.records_loader import (
    check_csv_records,
    check_obspy_records,
    load_csv_records,
    load_obspy_records,
)
from framework.models.components.cgm_gm.representation import (
    MAIN_CONDITIONS,
    ConditionScaler,
    LogSpectrogramScaler,
    SpectrogramTransform,
)
from framework.base import SplitDataModule
from framework.validation import require_choice

__all__ = ["METADATA_KEYS", "GroundMotionCatalog", "GroundMotionDataset"]

log = logging.getLogger(__name__)

METADATA_KEYS = ("magnitude", "rupture_distance", "depth", "source_latitude", "source_longitude", "station_latitude",
                 "station_longitude")


class GroundMotionDataset(Dataset):
    """Records ``[N, L]`` + scaled conditions ``[N, C]`` + metadata; items are dicts (see the module docstring)."""

    def __init__(self, waveforms: torch.Tensor, conditions: torch.Tensor, metadata: Mapping[str, torch.Tensor],
                 transform: SpectrogramTransform, scaler: LogSpectrogramScaler) -> None:
        self.waveforms, self.conditions, self.metadata = waveforms, conditions, dict(metadata)
        self.transform, self.scaler = transform, scaler

    def __len__(self) -> int:
        return len(self.waveforms)

    def __getitem__(self, index: int | torch.Tensor) -> dict[str, torch.Tensor]:
        """One record (``index`` an int) or a stack of them (``index [B]``: every entry gains a leading B)."""
        waveform = self.waveforms[index]
        spec = self.transform(waveform)
        item = {"spectrogram": self.scaler.normalize(spec).float(), "phase": torch.angle(spec).float(),
                "waveform": waveform, "condition": self.conditions[index]}
        item.update({k: v[index] for k, v in self.metadata.items()})
        return item

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """The DataLoader's batched fetch: one STFT for the whole batch instead of one per record (per-record STFTs
        on the loading process were most of a CGM-GM step's host time), split back into the items it collates."""
        batch = self[torch.as_tensor(list(indices), dtype=torch.long)]
        columns = {k: v.unbind(0) for k, v in batch.items()}
        return [{k: v[i] for k, v in columns.items()} for i in range(len(indices))]


class GroundMotionCatalog(SplitDataModule):
    """Ground-motion records for CGM-GM.

    Args:
        source: "synthetic" (the stochastic point-source catalog), "csv" (``records_path``: CGM-GM CSV layout) or
            "obspy" (``records_path``: metadata table of miniSEED / SAC files).
        records_path: the user's file for "csv" / "obspy".
        num_records: synthetic catalog size.
        num_stations, records_per_event, max_distance_km, magnitude_range: synthetic catalog settings.
        conditions: conditioning variables (default: magnitude, source lat/lon, station lat/lon, depth).
        condition_ranges: ``{name: [low, high]}`` overriding the normalisation ranges.
        val_fraction, test_fraction: fractions of events held out.
        normalization_split: "train" (default) or "all" (the released code's choice) for the log-amplitude range.
        sampling_rate, n_samples: record format (100 Hz, 6,000 samples).
        n_fft, hop_length: the STFT (160, 46 -> [131, 81]).
        skip_samples, resample, trim: real-record handling (see ``records_loader``).
        batch_size, num_workers, seed, cache_dir, pin_memory: see ``FrameworkDataModule``.
    """

    def __init__(self, *, source: str = "synthetic", records_path: str | None = None, num_records: int = 5000,
                 num_stations: int = 100, records_per_event: int = 10, max_distance_km: float = 80.0,
                 magnitude_range: Sequence[float] = (2.0, 3.99), conditions: Sequence[str] = MAIN_CONDITIONS,
                 condition_ranges: Mapping[str, Sequence[float]] | None = None, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, normalization_split: str = "train", sampling_rate: float = 100.0,
                 n_samples: int = 6000, n_fft: int = 160, hop_length: int = 46, skip_samples: int = 1000,
                 resample: bool = True, trim: bool = False, batch_size: int = 128, num_workers: int = 0,
                 seed: int = 0, cache_dir: str | None = None, pin_memory: bool = False) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, cache_dir=cache_dir,
                         pin_memory=pin_memory)
        require_choice("source", source, ("synthetic", "csv", "obspy"))
        require_choice("normalization_split", normalization_split, ("train", "all"))
        if source != "synthetic" and not records_path:
            raise ValueError(f"source={source!r} needs records_path (the user's records)")
        if source == "csv":
            check_csv_records(records_path)  # the user's files are checked now, before a logger opens a run
        elif source == "obspy":
            check_obspy_records(records_path)
        for name, value in (("num_records", num_records), ("num_stations", num_stations),
                            ("records_per_event", records_per_event), ("n_samples", n_samples)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (0 <= val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(f"need 0 <= val_fraction, 0 < test_fraction and their sum < 1, got {val_fraction!r}, "
                             f"{test_fraction!r}")
        if len(magnitude_range) != 2 or not magnitude_range[0] < magnitude_range[1]:
            raise ValueError(f"magnitude_range must be (low, high) with low < high, got {magnitude_range!r}")
        if max_distance_km <= 0:
            raise ValueError(f"max_distance_km must be positive, got {max_distance_km!r}")
        self.source, self.records_path = source, records_path
        self.num_records, self.num_stations, self.records_per_event = num_records, num_stations, records_per_event
        self.max_distance_km, self.magnitude_range = float(max_distance_km), tuple(float(m) for m in magnitude_range)
        self.condition_scaler = ConditionScaler(conditions, condition_ranges)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.normalization_split = normalization_split
        self.sampling_rate, self.n_samples = float(sampling_rate), n_samples
        self.skip_samples, self.resample, self.trim = skip_samples, resample, trim
        self.transform = SpectrogramTransform(n_fft=n_fft, hop_length=hop_length, length=n_samples)
        self.spectrogram_scaler: LogSpectrogramScaler | None = None
        self.datasets: dict[str, GroundMotionDataset] = {}

    # ------------------------------------------------------------------ facts for the model
    @property
    def num_conditions(self) -> int:
        return len(self.condition_scaler)

    @property
    def dt(self) -> float:
        return 1.0 / self.sampling_rate

    def normalization(self) -> dict[str, object]:
        """What the model needs to invert the representation and scale new conditions (set up first)."""
        if self.spectrogram_scaler is None:
            raise RuntimeError("call setup() before normalization()")
        return {"log_min": self.spectrogram_scaler.log_min, "log_max": self.spectrogram_scaler.log_max,
                "condition_names": list(self.condition_scaler.names),
                "condition_low": self.condition_scaler.low.tolist(),
                "condition_high": self.condition_scaler.high.tolist(), "dt": self.dt}

    # ------------------------------------------------------------------ data
    def load_catalog(self) -> dict[str, np.ndarray]:
        """All records as numpy columns (the synthetic catalog is generated once and cached)."""
        if self.source == "csv":
            return load_csv_records(self.records_path, sampling_rate=self.sampling_rate, n_samples=self.n_samples,
                                    skip_samples=self.skip_samples, resample=self.resample, trim=self.trim)
        if self.source == "obspy":
            return load_obspy_records(self.records_path, sampling_rate=self.sampling_rate, n_samples=self.n_samples,
                                      resample=self.resample, trim=True if self.trim is None else self.trim)
        if not np.isclose(self.sampling_rate, 100.0):
            raise ValueError(f"the synthetic catalog is sampled at 100 Hz, got sampling_rate={self.sampling_rate!r}")
        data = self.cached("cgm-gm-synthetic-sfba", generate_synthetic_catalog, version=1,
                           num_records=self.num_records, seed=self.seed, num_stations=self.num_stations,
                           records_per_event=self.records_per_event, max_distance_km=self.max_distance_km,
                           magnitude_range=list(self.magnitude_range), n_samples=self.n_samples, dt=self.dt)
        return {k: np.asarray(v) for k, v in data[:].items()}

    def split_indices(self, event_id: np.ndarray) -> dict[str, np.ndarray]:
        events = np.unique(event_id)
        order = np.random.default_rng([self.seed, 3]).permutation(len(events))
        n_test = max(1, round(self.test_fraction * len(events)))
        n_val = round(self.val_fraction * len(events))
        if n_test + n_val >= len(events):
            raise ValueError(f"{len(events)} events are too few for val_fraction={self.val_fraction} and "
                             f"test_fraction={self.test_fraction}")
        groups = {"test": events[order[:n_test]], "val": events[order[n_test:n_test + n_val]],
                  "train": events[order[n_test + n_val:]]}
        return {k: np.flatnonzero(np.isin(event_id, v)) for k, v in groups.items()}

    def prepare_data(self) -> None:
        if self.source == "synthetic":
            self.load_catalog()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        data = self.load_catalog()
        waveforms = np.asarray(data["waveform"], dtype=np.float32)
        if waveforms.ndim != 2 or waveforms.shape[1] != self.n_samples:
            raise ValueError(f"records must be [N, {self.n_samples}], got {waveforms.shape}")
        bad = np.flatnonzero(~np.isfinite(waveforms).all(1))
        if len(bad):
            raise ValueError(f"record {int(bad[0])} (event {int(data['event_id'][bad[0]])}) has NaN/inf samples")
        splits = self.split_indices(np.asarray(data["event_id"]))
        conditions = torch.as_tensor(self.condition_scaler.transform(data, where=f"{self.source} records"))
        waves = torch.as_tensor(waveforms)
        fit_on = splits["train"] if self.normalization_split == "train" else np.arange(len(waves))
        log_amp = torch.cat([LogSpectrogramScaler.log_amplitude(self.transform(waves[chunk]))
                             for chunk in torch.as_tensor(fit_on).split(512)])
        self.spectrogram_scaler = LogSpectrogramScaler(float(log_amp.min()), float(log_amp.max()))
        metadata = {k: torch.as_tensor(np.asarray(data[k], dtype=np.float32)) for k in METADATA_KEYS}
        for name, idx in splits.items():
            index = torch.as_tensor(idx)
            self.datasets[name] = GroundMotionDataset(waves[index], conditions[index],
                                                      {k: v[index] for k, v in metadata.items()}, self.transform,
                                                      self.spectrogram_scaler)
        log.info("ground-motion catalog: %s", {k: len(v) for k, v in self.datasets.items()})

