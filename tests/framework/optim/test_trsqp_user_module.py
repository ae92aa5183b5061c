"""A user's own LightningModule (not the project's base class) trained by TR-SQP through the documented protocol."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from framework.optim.constrained_protocol import constrained_training_step
from framework.optim.trsqp import TRSQP


class FairClassifier(pl.LightningModule):
    """Logistic model whose mean scores on two groups must be equal (one equality constraint)."""

    def __init__(self, group_a, group_b, x_train, y_train, *, draw: bool):
        super().__init__()
        self.automatic_optimization = False
        self.net = torch.nn.Linear(x_train.shape[1], 1).double()
        self.register_buffer("group_a", group_a)
        self.register_buffer("group_b", group_b)
        self.x_train, self.y_train = x_train, y_train
        self.generator = torch.Generator().manual_seed(0)
        if draw:
            self.draw_batch = self._draw_batch

    def constraints(self):
        return (self.net(self.group_a).mean() - self.net(self.group_b).mean()).reshape(1)

    def objective(self, batch):
        x, y = batch
        return F.binary_cross_entropy_with_logits(self.net(x).squeeze(1), y)

    def _draw_batch(self, size):
        idx = torch.randint(len(self.x_train), (size,), generator=self.generator)
        return self.x_train.index_select(0, idx), self.y_train.index_select(0, idx)

    def training_step(self, batch, batch_idx):
        constrained_training_step(self, batch)

    def configure_optimizers(self):
        return TRSQP(self.parameters(), hessian="estimated", max_samples=512)


def make_data():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(256, 4, generator=gen, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * torch.randn(256, generator=gen, dtype=torch.float64) > 0).double()
    return x[:64] + 0.5, x[64:128] - 0.5, x, y


def test_user_module_with_and_without_draw_batch(tmp_path):
    for draw in (True, False):
        group_a, group_b, x, y = make_data()
        model = FairClassifier(group_a, group_b, x, y, draw=draw)
        loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
        trainer = pl.Trainer(max_steps=25, precision="64-true", accelerator="cpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             default_root_dir=tmp_path)
        start = float(F.binary_cross_entropy_with_logits(model.net(x).squeeze(1), y))
        trainer.fit(model, loader)
        with torch.no_grad():
            end = float(F.binary_cross_entropy_with_logits(model.net(x).squeeze(1), y))
            violation = float(model.constraints().abs())
        assert violation < 1e-8
        assert end < start
        if not draw:  # without draw_batch every estimate uses the loader's batch of 64
            assert float(trainer.callback_metrics["trsqp/gradient_samples"]) == 64.0
        assert "trsqp/radius" in trainer.callback_metrics and "trsqp/accepted" in trainer.callback_metrics
