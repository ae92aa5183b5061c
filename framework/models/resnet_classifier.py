"""ResNet family image classifier (width, depth, residual connections and batch norm configurable).

The model of the landscape studies' ResNet case (LossLens ResNet-20 with and without skip connections, PyHessian's
residual / BN ablations), sized down for offline data such as scikit-learn's 8×8 digits
(:class:`framework.datamodules.digits_classification.DigitsClassification`). Batches are ``(images [B, C, H, W], labels [B])``;
the loss is cross-entropy; accuracy is logged per stage.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from framework.base import FrameworkModule
from framework.models.components.landscape.resnet import ResNetFamily

__all__ = ["ResNetClassifier"]


class ResNetClassifier(FrameworkModule):
    """ResNet-(6n+2) classifier.

    Args:
        in_channels: image channels (linked from the data).
        num_classes: classes (linked from the data).
        width: channels of the first stage (16 = ResNet-20's).
        blocks_per_stage: n; depth = 6n + 2.
        residual: keep the shortcut connections.
        batch_norm: keep batch normalisation.
        label_smoothing: cross-entropy label smoothing.
        optimizer, scheduler: factories (e.g. SGD with momentum, cosine schedule).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 16,
        blocks_per_stage: int = 3,
        residual: bool = True,
        batch_norm: bool = True,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing!r}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.net = ResNetFamily(in_channels=in_channels, num_classes=num_classes, width=width,
                                blocks_per_stage=blocks_per_stage, residual=residual, batch_norm=batch_norm)
        self.label_smoothing = label_smoothing
        self.register_stage_metrics(MetricCollection({"accuracy": MulticlassAccuracy(num_classes, average="micro")}))

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def loss(self, batch: Any) -> Tensor:
        """Mean cross-entropy of a batch ``(images, labels)``."""
        images, labels = batch[0], batch[1]
        return torch.nn.functional.cross_entropy(self(images), labels, label_smoothing=self.label_smoothing)

    def _step(self, batch: Any, stage: str) -> Tensor:
        images, labels = batch[0], batch[1]
        logits = self(images)
        loss = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        metrics = self.metrics_for(stage)
        metrics.update(logits, labels)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "train", add_dataloader_idx=False)
        self.log_dict(metrics, on_step=False, on_epoch=True, add_dataloader_idx=False)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self(batch[0]).argmax(dim=-1)
