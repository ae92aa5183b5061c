"""The AlphaPruning callback on a model the tests did not write (``lightning.pytorch.demos``): prune, fine-tune,
checkpoint, resume with masks intact; logging; bad input."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.demos.transformer import LightningTransformer
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

from framework.callbacks.alphapruning import AlphaPruning
from framework.callbacks.pruning.masking import pruned_modules
from framework.callbacks.pruning.module_selection import NoPrunableModuleError

VOCAB = 64


class OfflineTransformer(LightningTransformer):
    """The demo transformer, minus its WikiText-2 download (the tests bring their own data)."""

    def prepare_data(self) -> None:
        pass


class TokenData(pl.LightningDataModule):
    """Random (inputs, target) token pairs for the demo transformer."""

    def __init__(self, n: int = 16, length: int = 12) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        inputs = torch.randint(0, VOCAB, (n, length), generator=g)
        self.dataset = TensorDataset(inputs, torch.roll(inputs, -1, dims=1))

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=4)


class RecordingLogger(Logger):
    """Keeps everything logged, in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[str, float] = {}

    @property
    def name(self):
        return "recording"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)


def _trainer(tmp_path, callbacks, max_epochs, logger=False):
    return pl.Trainer(
        default_root_dir=tmp_path, max_epochs=max_epochs, limit_train_batches=2, accelerator="cpu", devices=1,
        logger=logger, enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
        enable_checkpointing=False, num_sanity_val_steps=0,
    )


def _masks(model):
    return {name: module.weight_mask.clone() for name, module in pruned_modules(model).items()}


@pytest.mark.parametrize("pruner", ["magnitude", "wanda"])
def test_prune_finetune_checkpoint_resume(tmp_path, pruner):
    torch.manual_seed(0)
    model = OfflineTransformer(vocab_size=VOCAB)
    logger = RecordingLogger()
    callback = AlphaPruning(target_sparsity=0.5, epsilon=0.3, pruner=pruner, num_calibration_batches=2,
                            esd_plot_layers=0)
    trainer = _trainer(tmp_path, [callback], max_epochs=1, logger=logger)
    trainer.fit(model, datamodule=TokenData())

    masks = _masks(model)
    # Default selection: the Linear layers of the encoder/decoder blocks; not the embedding, the output head
    # (``decoder``) or attention out-projections.
    assert len(masks) == 8 and all(".layers." in name for name in masks)
    assert not any(name.endswith("out_proj") or name == "model.decoder" for name in masks)
    # Achieved sparsity per layer equals the allocation (within one weight per row for Wanda's per-row count).
    for name, layer in callback.report.layers.items():
        tolerance = 0.5 / 200 + 1e-9 if pruner == "wanda" else 0.5 / layer.size + 1e-9
        assert abs(layer.achieved - layer.allocated) <= tolerance, name
    assert callback.report.achieved_sparsity == pytest.approx(0.5, abs=3e-3)
    assert len({round(layer.allocated, 6) for layer in callback.report.layers.values()}) > 1  # non-uniform
    # Fine-tuning kept the masks: pruned weights are still exactly zero in the effective weights.
    for name, module in pruned_modules(model).items():
        assert torch.equal(module.weight == 0, module.weight_mask == 0) or bool((module.weight[module.weight_mask == 0] == 0).all())
    # Logged per-layer α, allocated and achieved sparsity.
    assert "alphapruning/achieved_sparsity" in logger.metrics
    some = next(iter(masks))
    assert {f"alphapruning/alpha/{some}", f"alphapruning/allocated/{some}", f"alphapruning/achieved/{some}"} <= set(logger.metrics)

    # The checkpoint holds masks and the callback state.
    path = tmp_path / "pruned.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    assert any(key.endswith("weight_mask") for key in checkpoint["state_dict"])

    # Resume into a fresh model and callback: no re-pruning, masks identical, training continues.
    torch.manual_seed(1)
    fresh = OfflineTransformer(vocab_size=VOCAB)
    resumed = AlphaPruning(target_sparsity=0.5, epsilon=0.3, pruner=pruner, num_calibration_batches=2,
                           esd_plot_layers=0)
    trainer2 = _trainer(tmp_path, [resumed], max_epochs=2)
    trainer2.fit(fresh, datamodule=TokenData(), ckpt_path=path)
    assert resumed.pruned and resumed.report is None  # restored, not pruned again
    after = _masks(fresh)
    assert after.keys() == masks.keys()
    for name in masks:
        assert torch.equal(after[name], masks[name]), name
        module = dict(fresh.named_modules())[name]
        assert bool((module.weight_orig * module.weight_mask)[module.weight_mask == 0].eq(0).all())
    assert trainer2.current_epoch == 2


def test_prune_at_epoch_and_make_permanent(tmp_path):
    torch.manual_seed(0)
    model = OfflineTransformer(vocab_size=VOCAB)
    callback = AlphaPruning(target_sparsity=0.3, epsilon=0.2, prune_at="epoch", prune_epoch=1, make_permanent=True,
                            esd_plot_layers=0)
    trainer = _trainer(tmp_path, [callback], max_epochs=2)
    trainer.fit(model, datamodule=TokenData())
    assert callback.pruned
    assert not pruned_modules(model)  # folded into the weights at teardown
    weight = model.model.transformer.encoder.layers[0].linear1.weight
    assert 0.1 < float((weight == 0).float().mean()) < 0.6


def test_uniform_allocation_and_fit_end(tmp_path):
    model = OfflineTransformer(vocab_size=VOCAB)
    callback = AlphaPruning(target_sparsity=0.4, allocation="uniform", prune_at="fit_end", esd_plot_layers=2)
    trainer = _trainer(tmp_path, [callback], max_epochs=1)
    trainer.fit(model, datamodule=TokenData())
    assert {round(layer.allocated, 9) for layer in callback.report.layers.values()} == {0.4}


def test_small_layers_warn_and_fall_back(tmp_path):
    class Tiny(BoringModel):
        def __init__(self):
            super().__init__()
            del self.layer  # registered first by BoringModel; the head must be the last module registered
            self.body = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Linear(64, 4), torch.nn.Linear(4, 32))
            self.layer = torch.nn.Linear(32, 2)

        def forward(self, x):
            return self.layer(self.body(x))

    logger = RecordingLogger()
    callback = AlphaPruning(target_sparsity=0.5, epsilon=0.2, esd_plot_layers=0)
    with pytest.warns(UserWarning, match="too (few|small)"):
        _trainer(tmp_path, [callback], max_epochs=1, logger=logger).fit(Tiny())
    assert set(callback.report.fallbacks) == {"body.1", "body.2"}
    assert logger.metrics["alphapruning/fallback_layers"] == 2.0


def test_bad_input():
    for kwargs, match in [
        ({"target_sparsity": 1.0}, r"target_sparsity must lie in \[0, 1\)"),
        ({"target_sparsity": -0.1}, r"target_sparsity must lie in \[0, 1\)"),
        ({"epsilon": 1.0}, r"epsilon must lie in \[0, 1\)"),
        ({"epsilon": -0.2}, r"epsilon must lie in \[0, 1\)"),
        ({"pruner": "random"}, "pruner must be one of"),
        ({"metric": "alpha_max"}, "metric must be one of"),
        ({"prune_at": "never"}, "prune_at must be one of"),
        ({"prune_at": "epoch"}, "prune_epoch"),
        ({"num_calibration_batches": 0}, "num_calibration_batches"),
    ]:
        with pytest.raises(ValueError, match=match):
            AlphaPruning(**kwargs)


def test_no_prunable_module_and_missing_calibration(tmp_path):
    # BoringModel has one Linear: the output head, which the default selection leaves out.
    with pytest.raises(NoPrunableModuleError, match="no prunable module"):
        _trainer(tmp_path, [AlphaPruning(target_sparsity=0.5)], max_epochs=1).fit(BoringModel())

    class NoData(BoringModel):
        train_dataloader = None

    model = BoringModel()
    callback = AlphaPruning(target_sparsity=0.5, pruner="wanda", include=["layer"], calibration_split="test")
    trainer = _trainer(tmp_path, [callback], max_epochs=1)
    model.test_dataloader = lambda: DataLoader([])  # an empty calibration split
    with pytest.raises(ValueError, match="needs calibration data"):
        trainer.fit(model)


def test_wanda_with_dataloaders_passed_to_fit(tmp_path):
    # No datamodule and no *_dataloader hook on the module: calibration comes from the loaders given to fit().
    model = OfflineTransformer(vocab_size=VOCAB)
    callback = AlphaPruning(target_sparsity=0.5, pruner="wanda", num_calibration_batches=1, esd_plot_layers=0)
    trainer = _trainer(tmp_path, [callback], max_epochs=1)
    trainer.fit(model, train_dataloaders=TokenData().train_dataloader())
    assert callback.report.achieved_sparsity == pytest.approx(0.5, abs=5e-3)
