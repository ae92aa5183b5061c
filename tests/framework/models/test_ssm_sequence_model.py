"""SSMSequenceModel: optimizer groups, classification / regression steps through Lightning, padding-aware pooling,
bf16 autocast, the frequency-response probe and bad input."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from framework.callbacks.frequency_response import FrequencyResponseProbe
from framework.callbacks.sobolev_filter import SobolevFilter
from framework.datamodules.ssm_waves import SSMWaves
from framework.models.components.ssm import CosineWarmupLR, kernel_frequency_response, layer_frequency_response
from framework.models.ssm_sequence_model import SSMSequenceModel


def _adamw(params):
    return torch.optim.AdamW(params, lr=0.01, weight_decay=0.05)


def _small(**kwargs):
    defaults = dict(d_model=8, n_layers=2, state_size=4, seq_len=64, optimizer=_adamw)
    defaults.update(kwargs)
    return SSMSequenceModel(**defaults)


def test_ssm_parameters_get_their_own_lr_and_no_weight_decay():
    model = _small(task="classification", num_classes=3, ssm_lr=0.004)
    optimizer = model.configure_optimizers()
    other, ssm = optimizer.param_groups
    assert ssm["lr"] == 0.004 and ssm["weight_decay"] == 0.0
    assert other["lr"] == 0.01 and other["weight_decay"] == 0.05
    ssm_ids = {id(p) for layer in model.ssm_layers() for p in layer.kernel.ssm_parameters()}
    assert {id(p) for p in ssm["params"]} == ssm_ids
    assert all(id(p) not in ssm_ids for p in other["params"])


def test_cosine_warmup_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = CosineWarmupLR(opt, warmup_steps=4, total_steps=12)
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(lrs[:5], [0.2, 0.4, 0.6, 0.8, 1.0])
    assert lrs[8] == pytest.approx(0.5) and lrs[12] == pytest.approx(0.0) and lrs[13] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="total_steps"):
        CosineWarmupLR(opt, warmup_steps=5, total_steps=5)


def test_padding_is_ignored_by_mean_pooling_for_causal_models():
    torch.manual_seed(0)
    model = _small(task="classification", num_classes=3, vocab_size=11, norm="layer").eval()
    tokens = torch.randint(1, 11, (1, 20))
    padded = torch.cat([tokens, torch.zeros(1, 12, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(padded, torch.tensor([20])), model(tokens), atol=1e-5, rtol=1e-5)


def test_classification_fit_with_probe_logs_figures(tmp_path):
    torch.manual_seed(1)
    x = torch.randn(32, 24)
    y = (x[:, :12].mean(1) > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    model = _small(task="classification", num_classes=2, bidirectional=True, norm="batch", dropout=0.1)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=CSVLogger(tmp_path), enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False,
                         callbacks=[FrequencyResponseProbe(num_frequencies=64), SobolevFilter(learnable=True)])
    trainer.fit(model, loader, loader)
    assert "val/accuracy" in trainer.callback_metrics and "sobolev/beta_mean" in trainer.callback_metrics
    figures = list((tmp_path / "lightning_logs").rglob("*.png"))
    assert any("transfer_function" in f.name for f in figures)


def test_waves_regression_logs_per_output_error_and_probe(tmp_path):
    data = SSMWaves(frequencies=[1.0, 4.0, 16.0, 32.0], seq_len=128, grid_points=2, val_size=8, test_size=8,
                    batch_size=8)
    model = _small(task="regression", num_outputs=4, output_names=["w1", "w4", "w16", "w32"], seq_len=128,
                   n_layers=1, norm="none", mixing="none", residual=False, d_model=4, imag_offset=1.3,
                   dt_min=data.dt, dt_max=data.dt, learn_dt=False)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=CSVLogger(tmp_path), enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False,
                         callbacks=[FrequencyResponseProbe(num_frequencies=64)])
    trainer.fit(model, data)
    metrics = trainer.callback_metrics
    assert {"val/mae_w1", "val/mae_w32", "val/mse"} <= set(metrics)
    assert set(model.per_output_error("val")) == {"w1", "w4", "w16", "w32"}
    names = [f.name for f in (tmp_path / "lightning_logs").rglob("*.png")]
    assert any("per_frequency_error" in n for n in names)


def test_layer_response_matches_kernel_fft_plus_d():
    torch.manual_seed(2)
    model = _small(task="classification", num_classes=2, dt_min=0.05, dt_max=0.2, seq_len=4096)
    layer = model.ssm_layers()[0]
    analytic = layer_frequency_response(layer, 2049, include_d=False)
    numeric = kernel_frequency_response(layer, 4096)
    np.testing.assert_allclose(analytic.omega, numeric.omega, atol=1e-12)
    np.testing.assert_allclose(analytic.magnitude, numeric.magnitude, rtol=1e-3, atol=1e-3)


def test_bf16_autocast_forward_and_backward():
    torch.manual_seed(3)
    model = _small(task="classification", num_classes=4, vocab_size=7)
    tokens = torch.randint(0, 7, (2, 40))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens)
    assert logits.dtype == torch.bfloat16 and logits.shape == (2, 4)
    torch.nn.functional.cross_entropy(logits.float(), torch.tensor([0, 3])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("kwargs, message", [
    (dict(task="classification"), "num_classes"),
    (dict(task="regression"), "num_outputs"),
    (dict(task="segmentation"), "task"),
    (dict(task="regression", num_outputs=2, output_names=["a"]), "output_names"),
    (dict(task="classification", num_classes=3, alpha=0.0), "alpha"),
    (dict(task="classification", num_classes=3, dt_min=0.0), "Δ range"),
    (dict(task="classification", num_classes=3, norm="group"), "norm"),
])
def test_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _small(**kwargs)


def test_too_long_sequence_and_bad_batches():
    model = _small(task="classification", num_classes=3, seq_len=32)
    with pytest.raises(ValueError, match="max_length=32"):
        model(torch.randn(2, 33))
    with pytest.raises(ValueError, match="class ids"):
        model.training_step((torch.randn(2, 16), torch.zeros(2, 3)), 0)
