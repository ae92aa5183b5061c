"""The three forecaster LightningModules: a short fit + test through a Trainer (shared data, loss, metrics), the
CLI configs, the forecast-plot callback."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from framework.callbacks.forecast_plots import ForecastPlots
from framework.datamodules.retail_demand import RetailDemand
from framework.models.components.forecasting import MaskedHorizonAttention
from framework.models.mq_cnn import MQCNNForecaster
from framework.models.mq_transformer import MQTransformerForecaster
from framework.models.spade import SPADEForecaster

SMALL = dict(num_series=6, num_days=220, context_length=28, horizon=7, val_days=21, test_days=21, batch_size=4)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    dm = RetailDemand(cache_dir=str(tmp_path_factory.mktemp("cache")), **SMALL)
    dm.setup()
    return dm


@pytest.mark.parametrize("cls", [MQCNNForecaster, MQTransformerForecaster, SPADEForecaster])
def test_fit_and_test_report_every_subset(cls, data, tmp_path):
    torch.manual_seed(0)
    model = cls(num_features=data.num_features, context_length=28, horizon=7, num_forking=7,
                optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    before = [p.detach().clone() for p in model.parameters()]
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=1, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    trainer.test(model, datamodule=data, verbose=False)
    results = model.results["test"]
    for subset in ("all", "peak", "post_peak", "most_affected"):
        assert f"wql50_{subset}" in results and f"wql90_{subset}" in results and f"bias50_{subset}" in results
    assert results["wql50_all"] > 0
    batch = next(iter(data.test_dataloader()))
    forecasts = model.predict_step(batch, 0)
    assert forecasts.shape == (len(batch["target"]), 7, 11) and (forecasts.diff(dim=-1) >= 0).all()


def test_mismatched_window_and_horizon_are_clear_errors(data):
    with pytest.raises(ValueError, match="longer than the history"):
        MQCNNForecaster(num_features=9, context_length=7, horizon=28)
    model = MQCNNForecaster(num_features=9, context_length=56, horizon=7)
    batch = next(iter(data.test_dataloader()))
    with pytest.raises(ValueError, match="link data and model sizes"):
        model.validation_step(batch, 0)


def test_fused_and_explicit_attention_agree():
    torch.manual_seed(0)
    att = MaskedHorizonAttention(query_dim=3, key_dim=4, value_dim=2, d_model=8, num_heads=2)
    allowed = torch.rand(2, 5, 9) < 0.3
    args = (torch.randn(2, 5, 4, 3), torch.randn(2, 9, 4), torch.randn(2, 9, 2), allowed)
    torch.testing.assert_close(att(*args).context, att(*args, return_weights=True).context)


def test_forecast_plot_callback_draws_most_affected_panels(data):
    model = SPADEForecaster(num_features=data.num_features, context_length=28, horizon=7, num_forking=7)
    callback = ForecastPlots(num_series=2)
    indices = callback.select(data.datasets["val"])
    assert len(indices) == 2
    if data.datasets["val"].most_affected.any():
        assert all(bool(data.datasets["val"].most_affected[i]) for i in indices)
    fig = callback.figure(model, data.datasets["val"])
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="num_series"):
        ForecastPlots(num_series=0)


@pytest.mark.parametrize("name", ["retail_spade"])  # the config sweep runs all three
def test_config_runs_through_the_cli(name, run_cli, repo_root):
    config = repo_root / "configs" / "spade" / f"{name}.yaml"
    sweep = next(line for line in config.read_text().splitlines() if line.startswith("# sweep-args:"))
    cli = run_cli("fit", "--config", config, "--trainer.fast_dev_run=1", *sweep.split(":", 1)[1].split())
    assert cli.model.horizon == 7 and cli.model.network.num_features == cli.datamodule.num_features


def test_num_features_mismatch_with_the_data_is_a_clear_error(data, tmp_path):
    model = MQCNNForecaster(num_features=11, context_length=28, horizon=7, num_forking=7,
                            optimizer=lambda p: torch.optim.Adam(p, lr=1e-3))
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="set model.init_args.num_features=9"):
        trainer.fit(model, datamodule=data)
