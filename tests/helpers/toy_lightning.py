"""A minimal model/data pair on the framework's bases, for testing the CLI machinery independently of any method."""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch.utils.data import TensorDataset
from torchmetrics import MeanSquaredError, MetricCollection

from framework.base import FrameworkDataModule, FrameworkModule
from framework.loggers import log_figure, new_figure
from framework.validation import require_positive


def _make_regression(n: int, num_features: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, num_features, generator=generator)
    w = torch.linspace(-1.0, 1.0, num_features)
    y = x @ w + 0.05 * torch.randn(n, generator=generator)
    return {"x": x.numpy(), "y": y.numpy()}


class RegressionData(FrameworkDataModule):
    """Linear-regression data, generated once and cached with 🤗 datasets."""

    def __init__(self, *, n: int = 256, num_features: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        require_positive("n", n)
        require_positive("num_features", num_features)
        self.n = n
        self.num_features = num_features

    def _load(self):
        return self.cached("toy-regression", _make_regression, n=self.n, num_features=self.num_features, seed=self.seed)

    def prepare_data(self) -> None:
        self._load()

    def setup(self, stage: str | None = None) -> None:
        data = self._load()[:]
        x = torch.as_tensor(data["x"]).float()
        y = torch.as_tensor(data["y"]).float()
        split = int(0.75 * len(x))
        self.train_set = TensorDataset(x[:split], y[:split])
        self.val_set = TensorDataset(x[split:], y[split:])

    def train_dataloader(self):
        return self.make_dataloader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self.make_dataloader(self.val_set, shuffle=False)

    def test_dataloader(self):
        return self.make_dataloader(self.val_set, shuffle=False)

    def predict_dataloader(self):
        return self.make_dataloader(TensorDataset(self.val_set.tensors[0]), shuffle=False)


class RegressionModel(FrameworkModule):
    """A two-layer MLP regressor that logs MSE per stage and a residual plot each validation epoch."""

    def __init__(
        self,
        *,
        num_features: int = 4,
        hidden: int = 16,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler)
        require_positive("hidden", hidden)
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(num_features, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
        )
        self.register_stage_metrics(MetricCollection({"mse": MeanSquaredError()}))
        self._residuals: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        pred = self(x)
        loss = torch.nn.functional.mse_loss(pred, y)
        metrics = self.metrics_for(stage)
        metrics.update(pred, y)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "train")
        self.log_dict(metrics, on_step=False, on_epoch=True)
        if stage == "val":
            self._residuals.append((pred - y).detach())
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        return self(batch[0])

    def on_validation_epoch_end(self) -> None:
        if not self._residuals:
            return
        residuals = torch.cat(self._residuals).cpu().numpy()
        self._residuals.clear()
        fig = new_figure(figsize=(4, 3))
        ax = fig.add_subplot()
        ax.hist(residuals, bins=20)
        ax.set_xlabel("residual")
        log_figure(self.trainer, "val/residuals", fig)


class RecordRun(__import__("lightning.pytorch").pytorch.Callback):
    """Writes ``{rank: {world_size, batch_sizes, val_mse}}`` to ``<path>.rank<r>.json`` at the end of fitting."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.batch_sizes: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch_sizes.append(len(batch[0]))

    def on_fit_end(self, trainer, pl_module) -> None:
        import json

        record = {
            "world_size": trainer.world_size,
            "batch_sizes": self.batch_sizes,
            "val_mse": float(trainer.callback_metrics["val/mse"]),
        }
        with open(f"{self.path}.rank{trainer.global_rank}.json", "w") as handle:
            json.dump(record, handle)


class InterruptAtStep(__import__("lightning.pytorch").pytorch.Callback):
    """Raises ``KeyboardInterrupt`` (what Ctrl-C does) after optimizer step ``step``, to test interrupted runs."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt
