"""Real-record loaders (CGM-GM CSV layout, miniSEED / SAC through ObsPy) on small files written by the tests."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from framework.datamodules.ground_motion import GroundMotionCatalog, load_csv_records, load_obspy_records
from framework.datamodules.ground_motion.records_loader import (
    CSV_METADATA_COLUMNS,
    check_csv_records,
    check_obspy_records,
)

META = {"source_latitude": 37.9, "source_longitude": -122.1, "station_latitude": 37.8, "station_longitude": -122.3,
        "depth": 9.0, "magnitude": 3.1}


def _csv_row(event, rate, samples, rupture=20.0):
    meta = dict(META, event_id=event, sampling_frequency=rate, n_steps=len(samples), dt=1 / rate, min_frequency=0.1,
                max_frequency=50, n_frequency_steps=100, rupture_distance=rupture)
    return [meta[c] for c in CSV_METADATA_COLUMNS] + list(samples)


def _write_csv(path, rows, header=True):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        if header:
            writer.writerow([*CSV_METADATA_COLUMNS, *[f"s{i}" for i in range(len(rows[0]) - 14)]])
        writer.writerows(rows)


def test_csv_loader_drops_leading_samples_and_resamples(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(7000) * 1e-5, rng.standard_normal(7000) * 1e-5
    t = np.arange(14000) / 200.0
    slow = 1e-5 * np.sin(2 * np.pi * 1.0 * t)  # 1 Hz at 200 Hz: resampled to 100 Hz
    path = tmp_path / "records.csv"
    _write_csv(path, [_csv_row(1, 100, a), _csv_row(2, 100, b), _csv_row(3, 200, slow)])
    data = load_csv_records(path)
    assert data["waveform"].shape == (3, 6000)
    np.testing.assert_allclose(data["waveform"][0], a[1000:].astype(np.float32))
    expected = 1e-5 * np.sin(2 * np.pi * 1.0 * (np.arange(1000, 7000) / 100.0))
    np.testing.assert_allclose(data["waveform"][2][100:-100], expected[100:-100], atol=2e-8)
    np.testing.assert_array_equal(data["event_id"], [1, 2, 3])
    assert data["rupture_distance"][0] == 20.0
    _write_csv(tmp_path / "noheader.csv", [_csv_row(1, 100, a)], header=False)
    assert load_csv_records(tmp_path / "noheader.csv")["waveform"].shape == (1, 6000)


def test_csv_loader_errors_name_the_record(tmp_path):
    rng = np.random.default_rng(1)
    bad = rng.standard_normal(7000)
    bad[4321] = np.nan
    _write_csv(tmp_path / "nan.csv", [_csv_row(1, 100, rng.standard_normal(7000)), _csv_row(7, 100, bad)])
    with pytest.raises(ValueError, match=r"nan.csv:3 \(event 7\): waveform has non-finite values \(first at sample 4321: nan\)"):
        load_csv_records(tmp_path / "nan.csv")
    _write_csv(tmp_path / "rate.csv", [_csv_row(4, 50, rng.standard_normal(3500))])
    with pytest.raises(ValueError, match=r"event 4\): sampling rate 50 Hz differs from the expected 100 Hz"):
        load_csv_records(tmp_path / "rate.csv", resample=False)
    _write_csv(tmp_path / "short.csv", [_csv_row(5, 100, rng.standard_normal(5000))])
    with pytest.raises(ValueError, match=r"event 5\): 4000 samples .* need 6000"):
        load_csv_records(tmp_path / "short.csv")
    _write_csv(tmp_path / "long.csv", [_csv_row(6, 100, rng.standard_normal(8000))])
    with pytest.raises(ValueError, match="expected exactly 6000"):
        load_csv_records(tmp_path / "long.csv")
    assert load_csv_records(tmp_path / "long.csv", trim=True)["waveform"].shape == (1, 6000)
    with pytest.raises(ValueError, match="does not exist"):
        load_csv_records(tmp_path / "missing.csv")


def test_csv_records_through_the_datamodule(tmp_path):
    rng = np.random.default_rng(2)
    rows = [_csv_row(e, 100, rng.standard_normal(7000) * 1e-5) for e in range(10)]
    _write_csv(tmp_path / "r.csv", rows)
    dm = GroundMotionCatalog(source="csv", records_path=str(tmp_path / "r.csv"), batch_size=2, val_fraction=0.1,
                             test_fraction=0.2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["spectrogram"].shape == (2, 131, 81) and batch["condition"].shape == (2, 6)


def test_obspy_loader_reads_mseed_and_sac(tmp_path):
    obspy = pytest.importorskip("obspy")
    rng = np.random.default_rng(3)
    rows = []
    for i, (fmt, rate, n) in enumerate((("MSEED", 100.0, 6500), ("SAC", 50.0, 3300))):
        trace = obspy.Trace(data=(rng.standard_normal(n) * 1e-5).astype(np.float64))
        trace.stats.sampling_rate = rate
        trace.stats.channel = "HNE"
        name = f"rec{i}.{fmt.lower()}"
        trace.write(str(tmp_path / name), format=fmt)
        rows.append({"path": name, "event_id": i, **META})
    with (tmp_path / "meta.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    data = load_obspy_records(tmp_path / "meta.csv")
    assert data["waveform"].shape == (2, 6000)
    assert np.isfinite(data["waveform"]).all()
    assert data["rupture_distance"][0] == pytest.approx(np.hypot(data["epicentral_distance"][0], 9.0))
    with pytest.raises(ValueError, match="rec1.sac: sampling rate 50 Hz"):
        load_obspy_records(tmp_path / "meta.csv", resample=False)
    with pytest.raises(ValueError, match="rec0.mseed: 6500 samples .* expected exactly 6000"):
        load_obspy_records(tmp_path / "meta.csv", trim=False)


@pytest.mark.parametrize(("content", "needle"), [
    (None, "line 3 has a non-numeric cell; expected the CGM-GM CSV layout"),
    ("1,2,3\n", "line 1 has 3 columns; need the 14 metadata columns followed by the samples"),
    (",".join(CSV_METADATA_COLUMNS) + ",s0\n\n", "no records found"),
    (b"\xff\xfe\x00bad", "is not a readable CSV text file"),
])
def test_csv_check_and_loader_give_the_same_errors(tmp_path, content, needle):
    # One parser of the CGM-GM layout: the construction-time check and the full read fail alike, naming the file.
    path = tmp_path / "records.csv"
    if content is None:
        _write_csv(path, [_csv_row(1, 100, np.zeros(7000)), _csv_row(2, 100, np.zeros(7000))])
        lines = path.read_text().splitlines()
        lines[2] = lines[2].replace(",0.0,", ",oops,", 1)
        path.write_text("\n".join(lines) + "\n")
        check_csv_records(path)  # the check reads the first record row only
        with pytest.raises(ValueError, match=f"records.csv: {needle}"):
            load_csv_records(path)
        return
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    for read in (check_csv_records, load_csv_records):
        with pytest.raises(ValueError, match=f"records.csv.*{needle}"):
            read(path)


def test_obspy_metadata_columns_are_read_as_the_check_reads_them(tmp_path):
    obspy = pytest.importorskip("obspy")
    trace = obspy.Trace(data=np.random.default_rng(4).standard_normal(6000) * 1e-5)
    trace.stats.sampling_rate = 100.0
    trace.write(str(tmp_path / "rec.mseed"), format="MSEED")
    row = {"path": "rec.mseed", **META}
    meta = tmp_path / "meta.csv"
    meta.write_text(", ".join(row) + "\n" + ",".join(str(v) for v in row.values()) + "\n")  # "name, name, ..."
    check_obspy_records(meta)
    assert load_obspy_records(meta)["waveform"].shape == (1, 6000)
    meta.write_text(",".join(k for k in row if k != "depth") + "\n"
                    + ",".join(str(v) for k, v in row.items() if k != "depth") + "\n")
    for read in (check_obspy_records, load_obspy_records):
        with pytest.raises(ValueError, match=r"meta.csv.* lacks the columns \['depth'\]"):
            read(meta)
