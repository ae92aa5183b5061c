"""Issue 20, problems 2-4: refusals at setup instead of silent no-ops / bare AttributeErrors, inferred
``num_classes``, numbers in ``trainer.callback_metrics`` (EarlyStopping / ModelCheckpoint can monitor them), and
AlphaPruning's ``max_sparsity`` cap (checked against a brute-force allocation)."""

from __future__ import annotations

import re
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from torch import nn

from framework.callbacks.alphapruning import AlphaPruning
from framework.callbacks.forecast_plots import ForecastPlots
from framework.callbacks.frequency_response import FrequencyResponseProbe
from framework.callbacks.hessian_probe import HessianProbe
from framework.callbacks.loss_landscape_probe import LossLandscapeProbe
from framework.callbacks.model_requirements import UnsupportedModelError
from framework.callbacks.polarization_monitor import PolarizationMonitor
from framework.callbacks.pruning.allocation import allocate
from framework.callbacks.pruning.prune_model import alpha_prune
from framework.callbacks.rollout_plots import RolloutPlots
from tests.framework.callbacks.users_models import CnnWithBatchNorm, UserEnsemble


def _trainer(tmp_path, callbacks, **kwargs):
    options = dict(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                   accelerator="cpu", default_root_dir=tmp_path, callbacks=callbacks)
    options.update(kwargs)
    return pl.Trainer(**options)


class _Spy(pl.Callback):
    def __init__(self):
        self.hooks = []

    def setup(self, trainer, pl_module, stage):
        self.hooks.append("setup")

    def on_train_batch_start(self, *args):
        self.hooks.append("train_batch")


# ---------------------------------------------------------------- problem 2: say why, at setup
@pytest.mark.parametrize(("callback", "needle"), [
    (RolloutPlots(), r"RolloutPlots cannot serve BoringModel: it lacks `rollout\(\.\.\.\)`.*`context_length`.*`horizon`"),
    (FrequencyResponseProbe(), r"FrequencyResponseProbe found no SSM layer in BoringModel.*S4DKernel.*FilterableConvolution"),
    (ForecastPlots(), r"ForecastPlots cannot serve BoringModel: it lacks `forecast\(\.\.\.\)`.*`quantiles`"),
], ids=["RolloutPlots", "FrequencyResponseProbe", "ForecastPlots"])
def test_callbacks_refuse_models_they_cannot_serve_at_setup(tmp_path, callback, needle):
    # Old code: RolloutPlots raised a bare AttributeError ('context_length') at the first validation end;
    # FrequencyResponseProbe and ForecastPlots trained to the end and did nothing.
    spy = _Spy()
    with pytest.raises(UnsupportedModelError, match=needle):
        _trainer(tmp_path, [callback, spy]).fit(BoringModel())
    assert spy.hooks == []  # raised in setup: no later callback's setup, no training batch


def test_polarization_monitor_infers_num_classes_from_the_first_batch(tmp_path):
    # Old code: PolarizationMonitor() raised TypeError (num_classes was required).
    monitor = PolarizationMonitor(log_figures=False)
    trainer = _trainer(tmp_path, [monitor])
    trainer.fit(UserEnsemble(classes=4))  # no num_classes anywhere on the model: the logits' last dimension
    assert monitor.num_classes == 4
    assert monitor._metrics["val"].num_classes == 4
    assert "polarization/val/polarization" in trainer.callback_metrics


def test_polarization_monitor_takes_num_classes_from_the_model_and_checks_it(tmp_path):
    class Ensemble(UserEnsemble):
        def __init__(self):
            super().__init__(classes=3)
            self.num_classes = 3

    monitor = PolarizationMonitor(log_figures=False)
    _trainer(tmp_path, [monitor]).fit(Ensemble())
    assert monitor.num_classes == 3
    with pytest.raises(UnsupportedModelError, match=r"num_classes=5.*3 classes"):
        _trainer(tmp_path, [PolarizationMonitor(num_classes=5)]).fit(Ensemble())


def test_polarization_monitor_names_what_a_single_model_lacks(tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"per-member logits \[M, B, K\].*returns \[2, 3\].*checkpoints"):
        _trainer(tmp_path, [PolarizationMonitor()]).fit(CnnWithBatchNorm())


# ---------------------------------------------------------------- problem 3: callback_metrics
def test_probe_and_pruning_numbers_reach_callback_metrics_without_a_logger(tmp_path):
    # Old code: these went only to logger.log_metrics, so with logger=False they were nowhere.
    probes = [HessianProbe(top_k=1, max_iter=3, trace_samples=2, density_steps=3, density_bins=50, log_figures=False),
              LossLandscapeProbe(dims=1, resolution=3, log_figures=False),
              AlphaPruning(target_sparsity=0.5, esd_plot_layers=0)]
    trainer = _trainer(tmp_path, probes, num_sanity_val_steps=1)  # the sanity check resets Lightning's metrics
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(CnnWithBatchNorm())
    metrics = trainer.callback_metrics
    assert float(metrics["hessian/eigenvalue_1"]) == pytest.approx(probes[0].reports[-1].top_eigenvalue)
    assert float(metrics["landscape/center_loss"]) == pytest.approx(probes[1].reports[-1].center_loss)
    assert float(metrics["alphapruning/achieved_sparsity"]) == pytest.approx(probes[2].report.achieved_sparsity)


def test_early_stopping_and_checkpointing_monitor_the_top_eigenvalue(tmp_path):
    # Old code: EarlyStopping raised "Early stopping conditioned on metric `hessian/eigenvalue_1` which is not
    # available".
    probe = HessianProbe(top_k=1, max_iter=3, trace_samples=0, density_steps=0, every_n_epochs=1, at_fit_end=False,
                         log_figures=False, hvp_method="double_backward")
    # Stops as soon as it reads a value >= the threshold: it can only stop if the probe's key reaches it.
    stopper = EarlyStopping(monitor="hessian/eigenvalue_1", mode="max", stopping_threshold=-1e9,
                            check_on_train_epoch_end=True)
    keeper = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="hessian/eigenvalue_1", mode="max",
                             save_on_train_epoch_end=True)
    torch.manual_seed(0)
    trainer = _trainer(tmp_path, [probe, stopper, keeper], max_epochs=5, limit_val_batches=0,
                       enable_checkpointing=True)
    trainer.fit(BoringModel())
    values = [r["hessian/eigenvalue_1"] for r in probe.history]
    assert len(values) == 1 and trainer.current_epoch == 1  # EarlyStopping read the probe's key after epoch 0
    assert float(keeper.best_model_score) == pytest.approx(max(values))


# ---------------------------------------------------------------- problem 4: max_sparsity
def _llama7b_like(seed: int = 0):
    per_block = [4096 * 4096] * 4 + [11008 * 4096] * 3
    sizes = {f"layers.{b}.{j}": per_block[j] for b in range(32) for j in range(7)}
    rng = np.random.default_rng(seed)
    metrics = {n: float(v) for n, v in zip(sizes, rng.uniform(1.3, 6.9, len(sizes)))}
    return metrics, sizes


def _brute_force_capped(metrics, sizes, target, epsilon, cap):
    """Reference: s_i = min(cap, λ·r_i) with λ found by bisection so that the weighted mean is the target."""
    low, high = min(metrics.values()), max(metrics.values())
    ratios = {n: (1 - epsilon) + 2 * epsilon * (v - low) / (high - low) for n, v in metrics.items()}
    total = sum(sizes.values())
    mean = lambda lam: sum(sizes[n] * min(cap, lam * r) for n, r in ratios.items()) / total  # noqa: E731
    lo, hi = 0.0, cap / min(ratios.values())
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean(mid) < target else (lo, mid)
    return {n: min(cap, hi * r) for n, r in ratios.items()}


def test_allocation_cap_keeps_the_mean_and_names_the_capped_layers():
    metrics, sizes = _llama7b_like()
    with pytest.warns(UserWarning) as caught:
        plan = allocate(metrics, sizes, target_sparsity=0.9, epsilon=0.3, max_sparsity=0.99)
    reference = _brute_force_capped(metrics, sizes, 0.9, 0.3, 0.99)
    assert max(abs(plan.sparsities[n] - reference[n]) for n in sizes) < 1e-9
    mean = sum(plan.sparsities[n] * sizes[n] for n in sizes) / sum(sizes.values())
    assert mean == pytest.approx(0.9, abs=1e-12)
    assert max(plan.sparsities.values()) <= 0.99 + 1e-12
    capped = [n for n in sizes if reference[n] >= 0.99 - 1e-12]
    assert plan.clipped == capped and len(capped) > 10
    message = str(caught[0].message)
    assert f"{len(capped)} layer(s) hit the cap max_sparsity=0.99" in message
    assert all(name in message for name in capped[:20])


class _Blocks(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32)) for _ in range(4))
        with torch.no_grad():  # different spectra per layer, so the allocation spreads
            for i, block in enumerate(self.blocks):
                block[0].weight.mul_(torch.logspace(-2, 0, 32) ** (i / 3))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def test_alpha_prune_default_cap_prunes_no_layer_whole():
    # Old code: alpha_prune had no max_sparsity (TypeError) and clipped at 1.0 — whole matrices zeroed.
    model = _Blocks()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = alpha_prune(model, target_sparsity=0.9, epsilon=0.5, pruner="magnitude")
    assert report.allocation.clipped, "this setting must hit the cap (the formula exceeds 0.99)"
    assert max(layer.allocated for layer in report.layers.values()) <= 0.99 + 1e-12
    assert max(layer.achieved for layer in report.layers.values()) <= 0.99 + 1 / 1024
    assert report.achieved_sparsity == pytest.approx(0.9, abs=len(report.layers) / (8 * 1024))
    assert any(re.search(r"hit the cap max_sparsity=0\.99.*" + re.escape(report.allocation.clipped[0]), str(w.message))
               for w in caught)
    with pytest.raises(ValueError, match=r"max_sparsity must lie in \[target_sparsity, 1\]"):
        alpha_prune(_Blocks(), target_sparsity=0.9, max_sparsity=0.8, pruner="magnitude")


def test_alphapruning_callback_exposes_the_cap(tmp_path):
    callback = AlphaPruning(target_sparsity=0.6, epsilon=0.5, max_sparsity=0.62, esd_plot_layers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(tmp_path, [callback]).fit(CnnWithBatchNorm())
    assert callback.max_sparsity == 0.62
    assert max(layer.allocated for layer in callback.report.layers.values()) <= 0.62 + 1e-12
    assert callback.summary["capped_layers"] == callback.report.allocation.clipped
    with pytest.raises(ValueError, match="max_sparsity"):
        AlphaPruning(target_sparsity=0.6, max_sparsity=1.5)


class _RecordMetric(pl.Callback):
    """After the probe (callbacks run in list order), write this rank's view of the probe's key to a file."""

    def __init__(self, directory):
        self.directory = directory

    def on_train_epoch_end(self, trainer, pl_module):
        value = trainer.callback_metrics.get("hessian/eigenvalue_1")
        (self.directory / f"rank{trainer.global_rank}.txt").write_text("missing" if value is None else repr(float(value)))


@pytest.mark.ddp
@pytest.mark.slow
def test_every_ddp_rank_sees_the_rank0_probe_numbers(tmp_path):
    # The probe computes on rank 0 only; monitors (EarlyStopping, ModelCheckpoint) run on every rank and need the key.
    probe = HessianProbe(top_k=1, max_iter=3, trace_samples=0, density_steps=0, every_n_epochs=1, at_fit_end=False,
                         log_figures=False, hvp_method="double_backward")
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", devices=2, strategy="ddp_spawn", default_root_dir=tmp_path,
                         callbacks=[probe, _RecordMetric(tmp_path)])
    trainer.fit(BoringModel())
    values = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    assert values[0] != "missing" and values[0] == values[1]
