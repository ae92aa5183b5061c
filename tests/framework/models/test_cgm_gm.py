"""The CGM-GM LightningModule: parameter count, loss terms, generation, the CLI fit / test path."""

from __future__ import annotations

import math

import pytest
import torch

from framework.datamodules.ground_motion import LogSpectrogramScaler, SpectrogramTransform
from framework.models.cgm_gm import CGMGM

SWEEP = ["--data.init_args.num_records=60", "--data.init_args.batch_size=8",
         "--model.init_args.griffin_lim_iterations=2", "--model.init_args.discriminative_iterations=2",
         "--model.init_args.discriminative_repeats=1", "--model.init_args.map_grid_size=2"]


def _normalization():
    return {"log_min": -10.0, "log_max": -2.0, "condition_names": ["magnitude", "source_latitude",
            "source_longitude", "station_latitude", "station_longitude", "depth"],
            "condition_low": [1.09, 36.7865, -123.00267, 37.25898, -122.61573, -0.21],
            "condition_high": [3.99, 38.5575, -121.388, 38.24731, -121.6413, 21.49], "dt": 0.01}


def test_best_configuration_parameter_count():
    model = CGMGM()
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 173_009


def test_time_domain_term_uses_the_true_phase():
    transform = SpectrogramTransform()
    scaler = LogSpectrogramScaler(-12.0, -2.0)
    w = torch.randn(2, 6000, dtype=torch.float64) * 1e-4
    spec = transform(w)
    x = scaler.normalize(spec)
    rebuilt = transform.inverse(torch.polar(scaler.denormalize(x), torch.angle(spec)))
    torch.testing.assert_close(rebuilt, w, atol=1e-9, rtol=0)


def test_losses_and_generation():
    torch.manual_seed(0)
    model = CGMGM(griffin_lim_iterations=3)
    with pytest.raises(RuntimeError, match="no spectrogram normalisation"):
        _ = model.spectrogram_scaler
    model.set_normalization(_normalization())
    transform, scaler = model.transform, model.spectrogram_scaler
    w = torch.randn(4, 6000) * 1e-5
    spec = transform(w)
    batch = {"spectrogram": scaler.normalize(spec).float(), "phase": torch.angle(spec), "waveform": w,
             "condition": torch.rand(4, 6)}
    values = model.losses(batch)
    assert set(values) == {"loss", "reconstruction", "kl", "time"}
    expected = values["reconstruction"] + 0.2 * values["kl"] + 0.05 * values["time"]
    torch.testing.assert_close(values["loss"], expected)
    values["loss"].backward()
    assert all(p.grad is not None for p in model.network.decoder.parameters())
    waves = model.generate(torch.rand(2, 6), 3, generator=torch.Generator().manual_seed(0))
    assert waves.shape == (6, 6000) and torch.isfinite(waves).all()
    raw = torch.tensor([[5.0, 37.5, -122.0, 37.5, -122.0, 8.0]], dtype=torch.float64)
    assert model.scale_conditions(raw)[0, 0] == 1.0


def test_faithful_switch_and_bad_arguments():
    assert CGMGM(faithful=True).griffin_lim_transform.window_name == "hann"
    assert CGMGM().griffin_lim_transform.window_name == "rectangular"
    with pytest.raises(ValueError, match="kl_weight"):
        CGMGM(kl_weight=-1.0)
    with pytest.raises(ValueError, match="samples_per_condition"):
        CGMGM(samples_per_condition=0)
    model = CGMGM(num_conditions=3)
    with pytest.raises(ValueError, match="model expects 3"):
        model.set_normalization(_normalization())


def test_cli_fit_then_test(run_cli, repo_root):
    config = str(repo_root / "configs/cgm_gm/sfba_synthetic.yaml")
    cli = run_cli("fit", "--config", config, "--trainer.fast_dev_run=1", "--trainer.logger=false", *SWEEP)
    assert math.isfinite(float(cli.model.log_range[0]))
    cli = run_cli("test", "--config", config, "--trainer.fast_dev_run=1", "--trainer.logger=false", *SWEEP)
    metrics = cli.trainer.callback_metrics
    for key in ("test/loss", "test/real/residual_mean_5hz", "test/generated/residual_std_10hz",
                "test/discriminative_score"):
        assert key in metrics, sorted(metrics)
