"""PolarizationMonitor on models the tests write, on EnsembleClassifier, and on lightning.pytorch.demos classes."""

from __future__ import annotations

import functools

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.demos.boring_classes import BoringModel, DemoModel, RandomDataset
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from framework.callbacks.polarization_monitor import PolarizationMonitor
from framework.metrics.ensemble_polarization import ensemble_polarization_statistics
from framework.models.components.ensemble import SmallMLP
from framework.models.ensemble_classifier import EnsembleClassifier

K = 4


def _data(n=64, seed=0, d=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :K].argmax(1) + (torch.rand(n, generator=g) < 0.3).long()) % K  # learnable, with label noise
    return x, y


def _loader(n=64, seed=0, batch_size=16):
    return DataLoader(TensorDataset(*_data(n, seed)), batch_size=batch_size)


class HeadsEnsemble(pl.LightningModule):
    """A user's own ensemble: M linear heads; forward returns per-member logits [M, B, K]."""

    def __init__(self, members: int = 3, d: int = 8):
        super().__init__()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(d, K) for _ in range(members))

    def forward(self, x):
        return torch.stack([h(x) for h in self.heads])

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        return sum(F.cross_entropy(member, y) for member in logits)

    def validation_step(self, batch, batch_idx):
        pass

    def test_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class PlainClassifier(pl.LightningModule):
    """A user's single model: forward returns [B, K]."""

    def __init__(self, d: int = 8):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(d, 16), torch.nn.ReLU(), torch.nn.Linear(16, K))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        return {"loss": F.cross_entropy(self(batch[0]), batch[1])}

    def test_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _trainer(tmp_path, callbacks, **kwargs):
    defaults = dict(accelerator="cpu", devices=1, logger=CSVLogger(tmp_path), enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                    default_root_dir=tmp_path, callbacks=callbacks)
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def _stacked(model, loader):
    with torch.no_grad():
        xs, ys = zip(*loader)
        return model(torch.cat(xs)), torch.cat(ys)


def test_per_member_logits_model(tmp_path):
    monitor = PolarizationMonitor(num_classes=K, predict_for_members=[7])
    model = HeadsEnsemble()
    trainer = _trainer(tmp_path, [monitor], max_epochs=2)
    trainer.fit(model, train_dataloaders=_loader(), val_dataloaders=_loader(48, seed=1))
    ref = ensemble_polarization_statistics(*_stacked(model, _loader(48, seed=1)))
    metrics = trainer.callback_metrics
    assert float(metrics["polarization/val/polarization"]) == pytest.approx(ref.polarization, rel=1e-6)
    assert float(metrics["polarization/val/majority_vote_error"]) == pytest.approx(ref.majority_vote_error)
    assert float(metrics["polarization/val/disagreement_pairs"]) == pytest.approx(ref.disagreement_pairs)
    assert "polarization/val/predicted_majority_vote_error_M7" in metrics
    assert [r["epoch"] for r in monitor.history] == [0.0, 1.0]
    assert monitor.last_statistics["val"] == ref
    figures = {p.name.rsplit("_step", 1)[0] for p in (tmp_path / "lightning_logs").rglob("*.png")}
    assert {"polarization_val_w_histogram", "polarization_val_polarization_vs_epoch"} <= figures
    # Resume: the history travels in the callback state.
    restored = PolarizationMonitor(num_classes=K)
    restored.load_state_dict(monitor.state_dict())
    assert restored.history == monitor.history
    results = _trainer(tmp_path, [monitor]).test(model, dataloaders=_loader(48, seed=1), verbose=False)
    assert results[0]["polarization/test/polarization"] == pytest.approx(ref.polarization, rel=1e-6)


def test_logits_from_step_outputs_take_precedence(tmp_path):
    class OutputsModel(PlainClassifier):
        def validation_step(self, batch, batch_idx):
            x, _ = batch
            return {"member_logits": torch.stack([self(x), self(x) * -1.0, self(x) + 1.0])}

    monitor = PolarizationMonitor(num_classes=K)
    _trainer(tmp_path, [monitor], max_epochs=1).fit(OutputsModel(), train_dataloaders=_loader(),
                                                    val_dataloaders=_loader())
    assert monitor.last_statistics["val"].num_members == 3


def test_matches_ensemble_classifier_own_metrics(tmp_path):
    model = EnsembleClassifier(member=SmallMLP(in_features=8, num_classes=K, width=8, depth=1), num_classes=K,
                               num_members=3, optimizer=functools.partial(torch.optim.Adam, lr=1e-2))
    monitor = PolarizationMonitor(num_classes=K)
    trainer = _trainer(tmp_path, [monitor], max_epochs=1)
    trainer.fit(model, train_dataloaders=_loader(), val_dataloaders=_loader(48, seed=1))
    for key in ("polarization", "majority_vote_error", "disagreement", "c_bound"):
        assert float(trainer.callback_metrics[f"polarization/val/{key}"]) == pytest.approx(
            float(trainer.callback_metrics[f"val/{key}"]), rel=1e-9, nan_ok=True)


def test_checkpoint_ensemble_of_plain_models(tmp_path):
    paths = []
    for seed in range(3):
        pl.seed_everything(seed)
        model = PlainClassifier()
        trainer = _trainer(tmp_path, [], max_epochs=2, logger=False)
        trainer.fit(model, train_dataloaders=_loader())
        paths.append(tmp_path / f"seed{seed}.ckpt")
        trainer.save_checkpoint(paths[-1])
    members = [PlainClassifier.load_from_checkpoint(p) for p in paths]
    x, y = _data(48, seed=1)
    with torch.no_grad():
        ref = ensemble_polarization_statistics(torch.stack([m(x) for m in members]), y)
    assert ref.disagreement > 0  # the seeds produce different models
    monitor = PolarizationMonitor(num_classes=K, checkpoints=str(tmp_path / "seed*.ckpt"))
    results = _trainer(tmp_path, [monitor]).test(PlainClassifier(), dataloaders=_loader(48, seed=1), verbose=False)
    assert results[0]["polarization/test/polarization"] == pytest.approx(ref.polarization, rel=1e-6)
    assert monitor.last_statistics["test"] == ref
    offline = PolarizationMonitor.evaluate_checkpoints(PlainClassifier(), [str(p) for p in paths],
                                                       _loader(48, seed=1), num_classes=K)
    assert offline == ref


@pytest.mark.parametrize("demo_class", [BoringModel, functools.partial(DemoModel, out_dim=3)])
def test_lightning_demo_models_as_checkpoint_ensembles(tmp_path, demo_class):
    """Train lightning.pytorch.demos models (their own training loops and data) with 3 seeds, then measure them."""
    paths = []
    for seed in range(3):
        pl.seed_everything(seed)
        model = demo_class()
        trainer = pl.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
        trainer.fit(model, train_dataloaders=DataLoader(RandomDataset(32, 64), batch_size=8))
        paths.append(str(tmp_path / f"{seed}.ckpt"))
        trainer.save_checkpoint(paths[-1])
    num_classes = demo_class().forward(torch.zeros(1, 32)).shape[-1]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 32, generator=g)
    y = torch.randint(0, num_classes, (40,), generator=g)
    stats = PolarizationMonitor.evaluate_checkpoints(demo_class(), paths, [(x[:20], y[:20]), (x[20:], y[20:])],
                                                     num_classes=num_classes)
    loaded = []
    for p in paths:
        m = demo_class()
        m.load_state_dict(torch.load(p, weights_only=False)["state_dict"])
        loaded.append(m.eval())
    with torch.no_grad():
        ref = ensemble_polarization_statistics(torch.stack([m(x) for m in loaded]), y)
    assert stats == ref and stats.num_members == 3


def test_single_model_without_checkpoints_is_a_clear_error(tmp_path):
    monitor = PolarizationMonitor(num_classes=K)
    # Refused in setup, on a 2-sample dry run of the first validation batch.
    with pytest.raises(ValueError, match="per-member logits \\[M, B, K\\].*returns \\[2, 4\\].*checkpoints"):
        _trainer(tmp_path, [monitor], max_epochs=1).fit(PlainClassifier(), train_dataloaders=_loader(),
                                                        val_dataloaders=_loader())


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_classes"):
        PolarizationMonitor(num_classes=1)
    with pytest.raises(ValueError, match="stages"):
        PolarizationMonitor(num_classes=3, stages=("train",))
    with pytest.raises(FileNotFoundError, match="no file matches"):
        PolarizationMonitor(num_classes=3, checkpoints=str(tmp_path / "*.ckpt"))
    (tmp_path / "one.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match="at least 2 files"):
        PolarizationMonitor(num_classes=3, checkpoints=str(tmp_path / "*.ckpt"))
    with pytest.raises(ValueError, match="labelled batches"):
        PolarizationMonitor(num_classes=3)._split_batch(torch.zeros(3))
    with pytest.raises(ValueError, match="every_n_epochs"):
        PolarizationMonitor(num_classes=3, every_n_epochs=0)
