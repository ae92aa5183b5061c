"""HessianProbe on models the project did not write (Lightning's BoringModel), BN models and metric-logging models."""

from __future__ import annotations

import copy
import json

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel, ManualOptimBoringModel
from lightning.pytorch.loggers import CSVLogger

from framework.callbacks.hessian_probe import HessianProbe, hessian_report


def _trainer(tmp_path, callbacks, **kwargs):
    options = dict(max_epochs=1, limit_train_batches=3, limit_val_batches=1, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                   default_root_dir=tmp_path, callbacks=callbacks)
    options.update(kwargs)
    return pl.Trainer(**options)


def _fixed_batch():
    return torch.randn(16, 32, generator=torch.Generator().manual_seed(0))


def boring_dense_hessian(model: BoringModel, batch: torch.Tensor) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for _, p in model.named_parameters()]
    sizes = [p.numel() for p in params]

    def loss(flat):
        pieces = dict(zip(names, (t.reshape(p.shape) for t, p in zip(torch.split(flat, sizes), params))))
        out = torch.func.functional_call(model, pieces, (batch,))
        return model.loss(out)

    return torch.autograd.functional.hessian(loss, torch.cat([p.reshape(-1) for p in params]))


def test_eigenvalues_and_trace_on_boring_model_match_dense_hessian(tmp_path):
    model = BoringModel()
    batch = _fixed_batch()
    probe = HessianProbe(top_k=2, max_iter=100, tol=1e-6, trace_samples=100, density_steps=66, probe_data=[batch],
                         output_dir=str(tmp_path / "probes"))
    _trainer(tmp_path, [probe]).fit(model)
    report = probe.reports[-1]
    hessian = boring_dense_hessian(model, batch)
    exact = torch.linalg.eigvalsh(hessian.double())
    top = exact[torch.argsort(exact.abs(), descending=True)[:2]]
    torch.testing.assert_close(report.eigenpairs.values, top, rtol=1e-3, atol=1e-6)
    exact_trace = float(torch.trace(hessian))
    assert abs(report.trace.mean - exact_trace) < 4 * report.trace.standard_error + 1e-6
    # Full-length SLQ: its extreme Ritz values are the extreme eigenvalues.
    assert float(report.quadrature.values.max()) == pytest.approx(float(exact.max()), rel=1e-3)
    files = list((tmp_path / "probes").glob("hessian-fit_end-step*.json"))
    assert len(files) == 1
    payload = json.loads(files[0].read_text())
    assert payload["eigenvalues"] == pytest.approx(report.eigenpairs.values.tolist())
    assert len(payload["trace_samples"]) == 100 and payload["settings"]["top_k"] == 2


def _snapshot(trainer, model):
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
        "optimizer": copy.deepcopy(trainer.optimizers[0].state_dict()),
        "training": [m.training for m in model.modules()],
        "rng": torch.get_rng_state(),
    }


def _assert_same(before, after):
    for a, b in zip(before["params"], after["params"]):
        assert torch.equal(a, b)
    for a, b in zip(before["grads"], after["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)
    for a, b in zip(before["buffers"], after["buffers"]):
        assert torch.equal(a, b)
    assert before["training"] == after["training"]
    assert torch.equal(before["rng"], after["rng"])
    assert str(before["optimizer"]) == str(after["optimizer"])


def test_probe_changes_nothing_in_the_run(tmp_path):
    model = BoringModel()
    probe = HessianProbe(top_k=1, trace_samples=5, density_steps=5, at_fit_end=False, epochs=[5])
    trainer = _trainer(tmp_path, [probe])
    trainer.fit(model)
    model.train()
    before = _snapshot(trainer, model)
    probe.run(trainer, model, tag="manual")
    _assert_same(before, _snapshot(trainer, model))
    assert probe.history[-1]["tag"] == "manual"


class BatchNormModel(pl.LightningModule):
    """A BN + dropout classifier that logs a torchmetrics accuracy from training_step."""

    def __init__(self):
        super().__init__()
        import torchmetrics

        self.net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                       torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
        self.accuracy = torchmetrics.classification.MulticlassAccuracy(3)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.accuracy.update(logits, y)
        self.log("train/acc", self.accuracy)
        return torch.nn.functional.cross_entropy(logits, y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        data = torch.utils.data.TensorDataset(torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g))
        return torch.utils.data.DataLoader(data, batch_size=16, shuffle=True)


def test_batch_norm_model_is_probed_in_eval_mode_and_metrics_untouched(tmp_path):
    model = BatchNormModel()
    probe = HessianProbe(top_k=1, trace_samples=4, density_steps=4, probe_batches=2, at_fit_end=False,
                         every_n_epochs=1)
    trainer = _trainer(tmp_path, [probe], limit_val_batches=0)
    trainer.fit(model)
    model.train()
    model.accuracy.update(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    tp = model.accuracy.tp.clone()
    before = _snapshot(trainer, model)
    report = probe.run(trainer, model, tag="manual")
    _assert_same(before, _snapshot(trainer, model))
    assert torch.equal(model.accuracy.tp, tp)
    # The probed loss is the eval-mode loss on the two fixed (unshuffled) probe batches.
    batches = probe.collect_batches(trainer)
    model.eval()
    with torch.no_grad():
        expected = sum(torch.nn.functional.cross_entropy(model(x), y) * len(x) for x, y in batches) / 32
    model.train()
    assert report.loss == pytest.approx(float(expected), rel=1e-5)
    assert [len(b[0]) for b in batches] == [16, 16]
    loader_x = model.train_dataloader().dataset.tensors[0]
    assert torch.equal(batches[0][0], loader_x[:16])  # in dataset order, not shuffled


def test_scalars_and_figure_reach_the_logger(tmp_path):
    model = BoringModel()
    logger = CSVLogger(tmp_path, name="run")
    probe = HessianProbe(top_k=2, trace_samples=4, density_steps=8, density_bins=200, epochs=[0])
    _trainer(tmp_path, [probe], logger=logger, max_epochs=2).fit(model)
    logger.save()
    text = (tmp_path / "run" / "version_0" / "metrics.csv").read_text()
    for key in ("hessian/eigenvalue_1", "hessian/eigenvalue_2", "hessian/trace", "hessian/trace_standard_error",
                "hessian/density_negative_mass", "hessian/hvp_ms_double_backward"):
        assert key in text
    assert [h["tag"] for h in probe.history] == ["epoch0", "fit_end"]
    assert list((tmp_path / "run" / "version_0" / "figures").glob("hessian_esd_step*.png"))
    hparams = (tmp_path / "run" / "version_0" / "hparams.yaml").read_text()
    assert "hessian/top_k" in hparams


def test_user_loss_function_and_state_dict(tmp_path):
    model = BoringModel()
    calls = []

    def loss_fn(module, batch):
        calls.append(1)
        return (module(batch) ** 2).mean()

    probe = HessianProbe(top_k=1, trace_samples=3, density_steps=3, loss_fn=loss_fn)
    _trainer(tmp_path, [probe]).fit(model)
    assert calls and probe.reports[-1].loss > 0
    state = probe.state_dict()
    fresh = HessianProbe(top_k=1, trace_samples=3, density_steps=3, loss_fn=loss_fn)
    fresh.load_state_dict(state)
    assert fresh.history == probe.history


@pytest.mark.parametrize("kwargs, match", [
    ({"probe_batches": 0}, "probe_batches"),
    ({"probe_data": []}, "probe_data is empty"),
    ({"top_k": 0}, "top_k"),
    ({"eigen_method": "arnoldi"}, "eigen_method"),
    ({"hvp_method": "finite_difference"}, "hvp_method"),
    ({"trace_samples": -1}, "trace_samples"),
    ({"at_fit_end": False}, "never runs"),
    ({"dataloader": "test"}, "dataloader"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HessianProbe(**kwargs)


def test_model_without_usable_loss():
    plain = torch.nn.Linear(3, 1)
    with pytest.raises(ValueError, match="no training_step"):
        hessian_report(plain, [torch.randn(4, 3)])
    with pytest.raises(ValueError, match="manual optimization"):
        hessian_report(ManualOptimBoringModel(), [torch.randn(4, 32)])

    class NoLoss(BoringModel):
        def training_step(self, batch, batch_idx):
            return None

    with pytest.raises(ValueError, match="not a scalar loss"):
        hessian_report(NoLoss(), [torch.randn(4, 32)])
    with pytest.raises(ValueError, match="does not depend on the model"):
        hessian_report(plain, [torch.randn(4, 3)], loss_fn=lambda m, b: b.sum())
    with pytest.raises(ValueError, match="probe set is empty"):
        hessian_report(plain, [], loss_fn=lambda m, b: m(b).sum())
