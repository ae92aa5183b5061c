"""Loaders for real ground-motion records from a user path: the public CGM-GM CSV layout, and miniSEED / SAC files
(through ObsPy) described by a metadata table.

Both return the catalog columns of :func:`framework.datamodules.ground_motion.catalog.generate_synthetic_catalog` (waveform
``[N, n_samples]`` float32 velocity plus the metadata); checks are early and name the record:

* a sampling rate other than ``sampling_rate`` is resampled (polyphase, scipy) when ``resample=True``, refused
  otherwise;
* a record shorter than ``n_samples`` (after resampling and ``skip_samples``) is refused; a longer one is cut to
  ``n_samples`` when ``trim=True``, refused otherwise;
* NaN / inf samples or metadata are refused.

CSV layout (one record per row, EW velocity in m/s, as in ``Time_Series_Data_v5_EW.csv``): 14 metadata columns —
event id, source latitude, source longitude, station latitude, station longitude, depth (km), magnitude, sampling
frequency (Hz), number of steps, dt (s), min frequency, max frequency, number of frequency steps, rupture distance
(km) — then the samples. A header row is allowed (detected when its first cell is not a number). The CGM-GM data
drop the first 1,000 of 7,000 samples (``skip_samples=1000``).

Metadata table for miniSEED / SAC (CSV with a header): ``path`` (relative to the table's folder), ``magnitude``,
``source_latitude``, ``source_longitude``, ``station_latitude``, ``station_longitude``, ``depth``; optional
``event_id``, ``rupture_distance`` (default: hypocentral distance from the coordinates), ``channel`` (picks one
trace of a multi-trace file), ``start_offset`` (s after the trace start).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from contextlib import closing
from fractions import Fraction
from pathlib import Path

import numpy as np

from framework.base.data_files import read_csv_header, require_data_file
from framework.datamodules.ground_motion.catalog import epicentral_distance_km

__all__ = ["CSV_METADATA_COLUMNS", "check_csv_records", "check_obspy_records", "fit_record", "load_csv_records",
           "load_obspy_records"]

CSV_METADATA_COLUMNS = (
    "event_id", "source_latitude", "source_longitude", "station_latitude", "station_longitude", "depth", "magnitude",
    "sampling_frequency", "n_steps", "dt", "min_frequency", "max_frequency", "n_frequency_steps", "rupture_distance",
)
_REQUIRED_METADATA = ("magnitude", "source_latitude", "source_longitude", "station_latitude", "station_longitude",
                      "depth")


def fit_record(samples: np.ndarray, *, rate: float, name: str, sampling_rate: float, n_samples: int,
               skip_samples: int = 0, resample: bool = True, trim: bool = False) -> np.ndarray:
    """Check / resample / cut one record to ``[n_samples]`` float64 at ``sampling_rate``; errors name the record."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 1:
        raise ValueError(f"record {name}: expected a 1-D trace, got shape {samples.shape}")
    if not np.all(np.isfinite(samples)):
        first = int(np.flatnonzero(~np.isfinite(samples))[0])
        raise ValueError(f"record {name}: waveform has non-finite values (first at sample {first}: "
                         f"{float(samples[first])!r})")
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"record {name}: sampling rate must be positive, got {rate!r}")
    if not math.isclose(rate, sampling_rate, rel_tol=1e-6):
        if not resample:
            raise ValueError(f"record {name}: sampling rate {rate:g} Hz differs from the expected {sampling_rate:g} "
                             "Hz (set resample=True to resample it)")
        from scipy.signal import resample_poly

        ratio = Fraction(sampling_rate / rate).limit_denominator(1000)
        samples = resample_poly(samples, ratio.numerator, ratio.denominator)
    samples = samples[skip_samples:]
    if len(samples) < n_samples:
        raise ValueError(f"record {name}: {len(samples)} samples at {sampling_rate:g} Hz after skipping "
                         f"{skip_samples}, need {n_samples}")
    if len(samples) > n_samples and not trim:
        raise ValueError(f"record {name}: {len(samples)} samples at {sampling_rate:g} Hz after skipping "
                         f"{skip_samples}, expected exactly {n_samples} (set trim=True to keep the first {n_samples})")
    return samples[:n_samples]


def _finalize(meta: dict[str, list], waveforms: list[np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    columns = {k: np.asarray(v, dtype=np.float64) for k, v in meta.items()}
    for key in _REQUIRED_METADATA:
        bad = np.flatnonzero(~np.isfinite(columns[key]))
        if len(bad):
            raise ValueError(f"record {names[bad[0]]}: metadata {key} is not a finite number")
    epi = epicentral_distance_km(columns["source_latitude"], columns["source_longitude"],
                                 columns["station_latitude"], columns["station_longitude"])
    columns["epicentral_distance"] = epi
    hypo = np.hypot(epi, columns["depth"])
    if "rupture_distance" not in columns:
        columns["rupture_distance"] = hypo
    else:
        missing = ~np.isfinite(columns["rupture_distance"])
        columns["rupture_distance"] = np.where(missing, hypo, columns["rupture_distance"])
    columns["event_id"] = np.asarray(columns.get("event_id", np.arange(len(names))), dtype=np.float64).astype(np.int64)
    columns["waveform"] = np.stack(waveforms).astype(np.float32) if waveforms else np.zeros((0, 0), np.float32)
    return columns


def _csv_record_rows(path: Path, label: str) -> Iterator[tuple[int, list[float]]]:
    """``(line number, values)`` of each record row of a CGM-GM-layout CSV: blank rows skipped, a first row that is
    not numeric taken as the header, at least the metadata columns plus one sample. ``label`` starts each error."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for line_number, row in enumerate(csv.reader(handle), start=1):
                if not row or all(not cell.strip() for cell in row):
                    continue
                try:
                    values = [float(cell) for cell in row]
                except ValueError:
                    if line_number == 1:
                        continue  # header
                    raise ValueError(f"{label}: line {line_number} has a non-numeric cell; "
                                     "expected the CGM-GM CSV layout") from None
                if len(values) <= len(CSV_METADATA_COLUMNS):
                    raise ValueError(f"{label}: line {line_number} has {len(values)} columns; "
                                     f"need the {len(CSV_METADATA_COLUMNS)} metadata columns followed by the samples")
                yield line_number, values
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{label} is not a readable CSV text file ({error})") from None


def check_csv_records(path: str | Path) -> None:
    """Cheap check of a CGM-GM-layout CSV before any run starts: a non-empty text file whose first record row has
    the 14 numeric metadata columns and samples (the full read, with per-record checks, is :func:`load_csv_records`)."""
    path = require_data_file("records_path", path)
    with closing(_csv_record_rows(path, f"records_path={str(path)!r}")) as rows:
        if next(rows, None) is None:  # only the first record row is read
            raise ValueError(f"records_path={str(path)!r}: no records found")


def _import_obspy():
    try:
        import obspy
    except ImportError as error:  # optional dependency
        raise ImportError("reading miniSEED / SAC records needs ObsPy: pip install obspy") from error
    return obspy


def check_obspy_records(metadata_path: str | Path) -> None:
    """Check the metadata table (columns, at least one row) and every record it lists (exists, non-empty, ObsPy
    reads its header) before any run starts; the samples are read by :func:`load_obspy_records`."""
    obspy = _import_obspy()
    metadata_path = Path(metadata_path)
    read_csv_header("records_path", metadata_path, required=("path", *_REQUIRED_METADATA))
    with metadata_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for line_number, row in enumerate(rows, start=2):
        name = (row.get("path") or "").strip()
        if not name:
            raise ValueError(f"{metadata_path}: line {line_number} has an empty 'path'")
        file = require_data_file(f"record {name} (line {line_number} of {metadata_path.name})",
                                 metadata_path.parent / name)
        try:
            obspy.read(str(file), headonly=True)
        except Exception as error:  # noqa: BLE001 - ObsPy raises TypeError, ValueError, struct.error, ... by format
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(f"record {name}: ObsPy cannot read {str(file)!r} ({reason}); expected miniSEED, SAC or "
                             "another format ObsPy reads") from None


def load_csv_records(path: str | Path, *, sampling_rate: float = 100.0, n_samples: int = 6000,
                     skip_samples: int = 1000, resample: bool = True, trim: bool = False) -> dict[str, np.ndarray]:
    """Records of a CGM-GM-layout CSV (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"records CSV {str(path)!r} does not exist")
    meta: dict[str, list] = {k: [] for k in CSV_METADATA_COLUMNS if k not in ("n_steps", "min_frequency",
                                                                            "max_frequency", "n_frequency_steps")}
    waveforms, names = [], []
    for line_number, values in _csv_record_rows(path, str(path)):
        record = dict(zip(CSV_METADATA_COLUMNS, values[:len(CSV_METADATA_COLUMNS)]))
        name = f"{path.name}:{line_number} (event {record['event_id']:g})"
        rate = record["sampling_frequency"]
        if not math.isfinite(rate) or rate <= 0:
            rate = 1.0 / record["dt"] if record["dt"] > 0 else float("nan")
        waveforms.append(fit_record(np.asarray(values[len(CSV_METADATA_COLUMNS):]), rate=rate, name=name,
                                    sampling_rate=sampling_rate, n_samples=n_samples, skip_samples=skip_samples,
                                    resample=resample, trim=trim))
        names.append(name)
        for key, values_of_key in meta.items():
            values_of_key.append(record[key])
    if not waveforms:
        raise ValueError(f"{path}: no records found")
    return _finalize(meta, waveforms, names)


def load_obspy_records(metadata_path: str | Path, *, sampling_rate: float = 100.0, n_samples: int = 6000,
                       resample: bool = True, trim: bool = True) -> dict[str, np.ndarray]:
    """miniSEED / SAC records (any format ObsPy reads) listed in a metadata CSV (see the module docstring)."""
    obspy = _import_obspy()
    metadata_path = Path(metadata_path)
    if not metadata_path.is_file():
        raise ValueError(f"metadata table {str(metadata_path)!r} does not exist")
    read_csv_header("records_path", metadata_path, required=("path", *_REQUIRED_METADATA))
    with metadata_path.open(newline="", encoding="utf-8") as handle:
        # Column names stripped as read_csv_header strips them, so a table it accepts is read the same way.
        rows = [{(key or "").strip(): value for key, value in row.items()} for row in csv.DictReader(handle)]
    optional = [k for k in ("event_id", "rupture_distance") if k in rows[0]]
    meta: dict[str, list] = {k: [] for k in (*_REQUIRED_METADATA, *optional)}
    waveforms, names = [], []
    for row in rows:
        file = metadata_path.parent / row["path"]
        name = row["path"]
        if not file.is_file():
            raise ValueError(f"record {name}: file {str(file)!r} does not exist")
        try:
            stream = obspy.read(str(file))
        except Exception as error:  # noqa: BLE001 - the file changed since check_obspy_records, or its data are bad
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(f"record {name}: ObsPy cannot read {str(file)!r} ({reason})") from None
        channel = (row.get("channel") or "").strip()
        if channel:
            stream = stream.select(channel=channel)
        if len(stream) != 1:
            raise ValueError(f"record {name}: {len(stream)} traces{' for channel ' + channel if channel else ''}; "
                             "give one trace per file or a 'channel' column")
        trace = stream[0]
        offset = float(row.get("start_offset") or 0.0)
        skip = round(offset * sampling_rate)
        waveforms.append(fit_record(trace.data, rate=float(trace.stats.sampling_rate), name=name,
                                    sampling_rate=sampling_rate, n_samples=n_samples, skip_samples=skip,
                                    resample=resample, trim=trim))
        names.append(name)
        for key, values_of_key in meta.items():
            try:
                values_of_key.append(float(row[key]) if row[key] not in ("", None) else float("nan"))
            except ValueError:
                raise ValueError(f"record {name}: {key}={row[key]!r} is not a number") from None
    return _finalize(meta, waveforms, names)
