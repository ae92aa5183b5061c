"""The synthetic SFBA catalog (stochastic point source), the STFT representation, conditioning and the DataModule."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from framework.datamodules.ground_motion import (
    ConditionScaler,
    GroundMotionCatalog,
    LogSpectrogramScaler,
    SpectrogramTransform,
    generate_synthetic_catalog,
)
from framework.datamodules.ground_motion.stochastic_point_source import (
    CrustalModel,
    acceleration_fas,
    corner_frequency,
    saragoni_hart_window,
    simulate_velocity,
)
from framework.metrics.ground_motion import scaling_slopes, smoothed_ln_fas


def test_target_spectrum_matches_pyrvt():
    # pyrvt's WNA SourceTheoryMotion is the same Boore (2003) model with independent code (its FAS is in g·s).
    from pyrvt.motions import SourceTheoryMotion

    freqs = np.geomspace(0.2, 45.0, 25)
    for magnitude, distance, stress in ((2.5, 10.0, 30.0), (3.5, 30.0, 100.0), (3.9, 70.0, 10.0)):
        motion = SourceTheoryMotion(magnitude, distance, "wna", stress_drop=stress, depth=8.0, freqs=freqs)
        motion.calc_fourier_amps(freqs)
        ours = acceleration_fas(freqs, magnitude, math.hypot(distance, 8.0), stress_drop=stress, kappa=0.04)
        np.testing.assert_allclose(ours, motion.fourier_amps * 9.80665, rtol=5e-3)


def test_target_spectrum_scaling_is_analytic():
    f = np.array([1.0, 5.0, 20.0])
    crust = CrustalModel()
    # Distance inside the 1/R zone: ratio = (R1/R2) * exp(-pi f (R2 - R1) / (Q beta)).
    r1, r2 = 10.0, 30.0
    q = 180 * f**0.45
    expected = (r1 / r2) * np.exp(-math.pi * f * (r2 - r1) / (q * crust.shear_velocity))
    np.testing.assert_allclose(acceleration_fas(f, 3.0, r2) / acceleration_fas(f, 3.0, r1), expected, rtol=1e-10)
    # Well below the corner frequency, displacement ∝ M0: one magnitude unit = 10^1.5 in amplitude.
    low = np.array([0.01])
    ratio = acceleration_fas(low, 3.0, 20.0, stress_drop=30.0) / acceleration_fas(low, 2.0, 20.0, stress_drop=30.0)
    assert ratio[0] == pytest.approx(10**1.5, rel=1e-3)
    assert corner_frequency(3.0, 30.0) > corner_frequency(4.0, 30.0)


def test_saragoni_hart_window_shape():
    t = np.linspace(0, 20, 20001)
    w = saragoni_hart_window(t, 5.0)  # t_eta = 10 s: peak 1 at 0.2 t_eta, 0.05 at t_eta
    assert w[np.argmax(w)] == pytest.approx(1.0, abs=1e-6)
    assert t[np.argmax(w)] == pytest.approx(2.0, abs=1e-2)
    assert w[np.searchsorted(t, 10.0)] == pytest.approx(0.05, rel=1e-3)


def test_simulated_fas_matches_target_in_mean_square():
    rng = np.random.default_rng(0)
    n, dt = 6000, 0.01
    records = np.stack([simulate_velocity(rng, magnitude=3.0, distance_km=20.0, p_amplitude=0.0, noise_std=0.0)
                        for _ in range(150)])
    freqs = np.fft.rfftfreq(n, dt)
    acc_fas = np.abs(np.fft.rfft(records, axis=1)) * dt * 2 * np.pi * freqs
    rms = np.sqrt((acc_fas**2).mean(0))
    target = acceleration_fas(freqs, 3.0, 20.0)
    for f0 in (1.0, 3.0, 8.0, 20.0):
        band = (freqs > f0 / 1.2) & (freqs < f0 * 1.2)
        assert rms[band].mean() / target[band].mean() == pytest.approx(1.0, abs=0.08), f0


def test_catalog_is_deterministic_and_scales_with_magnitude_and_distance():
    a = generate_synthetic_catalog(num_records=240, seed=5)
    b = generate_synthetic_catalog(num_records=240, seed=5)
    c = generate_synthetic_catalog(num_records=40, seed=6)
    np.testing.assert_array_equal(a["waveform"], b["waveform"])
    assert not np.allclose(a["waveform"][:40], c["waveform"])
    assert a["waveform"].shape == (240, 6000) and a["waveform"].dtype == np.float32
    assert np.all(a["epicentral_distance"] <= 80.0) and np.all(a["magnitude"] >= 2.0)
    assert len(np.unique(a["event_id"])) < 240  # several stations per event
    t = {k: torch.as_tensor(a[k]) for k in ("magnitude", "rupture_distance", "depth")}
    ln_fas = smoothed_ln_fas(torch.as_tensor(a["waveform"]).double(), 0.01)
    slopes = scaling_slopes(ln_fas, t["magnitude"], t["rupture_distance"], t["depth"])
    assert (slopes[:, 1] > 1.5).all(), slopes  # rises with magnitude (GMM: 2.1–3.0)
    assert (slopes[:, 2] < -0.8).all(), slopes  # falls with distance


def test_site_field_makes_coordinates_matter():
    data = generate_synthetic_catalog(num_records=60, seed=1)
    assert data["ln_site_term"].std() > 0.15
    west = data["station_longitude"] < np.median(data["station_longitude"])
    assert data["ln_site_term"][west].mean() > data["ln_site_term"][~west].mean()


def test_stft_shapes_and_inverse():
    transform = SpectrogramTransform()
    w = torch.randn(3, 6000, dtype=torch.float64)
    spec = transform(w)
    assert spec.shape == (3, 131, 81) and spec.is_complex()
    torch.testing.assert_close(transform.inverse(spec), w)
    ref = torch.stft(w[0], n_fft=160, hop_length=46, window=torch.ones(160, dtype=torch.float64),
                     return_complex=True)
    torch.testing.assert_close(spec[0], ref.T)


def test_log_spectrogram_scaler_round_trip():
    scaler = LogSpectrogramScaler(-10.0, -2.0)
    spec = torch.polar(torch.tensor([1e-6, 1e-3, 1e-9], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    x = scaler.normalize(spec)
    assert ((x >= 0) & (x <= 1)).all()
    torch.testing.assert_close(scaler.denormalize(x), spec.abs())
    with pytest.raises(ValueError, match="log_min < log_max"):
        LogSpectrogramScaler(1.0, 0.0)


def test_condition_scaler_clips_with_warning_and_rejects_nan(caplog):
    scaler = ConditionScaler()
    good = {"magnitude": [2.0], "source_latitude": [37.5], "source_longitude": [-122.0], "station_latitude": [37.5],
            "station_longitude": [-122.0], "depth": [8.0]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = scaler.transform(good)
    assert out.shape == (1, 6) and ((out >= 0) & (out <= 1)).all()
    bad = dict(good, magnitude=[5.2])
    with pytest.warns(UserWarning, match=r"magnitude: 1 values .* outside \[1.09, 3.99\]"):
        out = scaler.transform(bad)
    assert out[0, 0] == 1.0
    assert "clipped" in caplog.text
    with pytest.raises(ValueError, match="record 0 has a non-finite depth"):
        scaler.transform(dict(good, depth=[float("nan")]))
    with pytest.raises(ValueError, match="unknown conditioning variables"):
        ConditionScaler(["vs30"])


def test_datamodule_batches_and_event_disjoint_splits(tmp_path):
    dm = GroundMotionCatalog(num_records=80, batch_size=8, cache_dir=str(tmp_path))
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["spectrogram"].shape == (8, 131, 81)
    assert batch["phase"].shape == (8, 131, 81)
    assert batch["waveform"].shape == (8, 6000)
    assert batch["condition"].shape == (8, 6)
    assert batch["spectrogram"].min() >= 0 and batch["spectrogram"].max() <= 1 + 1e-6
    data = dm.load_catalog()
    splits = dm.split_indices(data["event_id"])
    events = {k: set(data["event_id"][v]) for k, v in splits.items()}
    assert not (events["train"] & events["test"]) and not (events["train"] & events["val"])
    assert sum(len(v) for v in splits.values()) == 80
    norm = dm.normalization()
    assert norm["log_min"] < norm["log_max"] and norm["condition_names"][0] == "magnitude"


def test_batched_fetch_equals_one_record_at_a_time(tmp_path):
    # The DataLoader fetches a batch through __getitems__ (one STFT for the batch); each item must equal the record's
    # own __getitem__ (one STFT per record), and so must the collated batch.
    dm = GroundMotionCatalog(num_records=80, batch_size=8, cache_dir=str(tmp_path))
    dm.prepare_data()
    dm.setup("fit")
    dataset = dm.datasets["train"]
    indices = [5, 0, 17, 3]
    for got, index in zip(dataset.__getitems__(indices), indices):
        expected = dataset[index]
        assert got.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-6, atol=1e-7, msg=key)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    single = torch.utils.data.default_collate([dataset[i] for i in range(4)])
    for key in single:
        torch.testing.assert_close(batch[key], single[key], rtol=1e-6, atol=1e-7, msg=key)


def test_datamodule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="needs records_path"):
        GroundMotionCatalog(source="csv")
    with pytest.raises(ValueError, match="source"):
        GroundMotionCatalog(source="ncedc")
    with pytest.raises(ValueError, match="test_fraction"):
        GroundMotionCatalog(test_fraction=0.0)
