"""Logistic regression with linear equality constraints ``A w = b`` (the TR-StoSQP regression experiments).

``min_w  E_(z,y)[log(1 + exp(−y zᵀw))]  s.t.  A w = b`` with ``A ∈ R^{m×p}``, ``b ∈ R^m`` (the predecessor appends
five such constraints to each LIBSVM set; it does not say how they are generated, so we draw ``A`` and ``b`` i.i.d.
standard normal from ``constraint_seed``). The model draws i.i.d. batches of the size the optimizer asks for from the
DataModule (``draw_batch(size, generator)``), with its own generator whose state is checkpointed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy

from framework.models.constrained_problem import ConstrainedProblemModule

__all__ = ["ConstrainedLogisticRegression"]


class ConstrainedLogisticRegression(ConstrainedProblemModule):
    """Linear classifier ``w`` (float64) under ``A w = b``.

    Args:
        num_features: feature dimension incl. intercept (linked from the DataModule by the CLI).
        num_constraints: ``m`` (``< num_features``).
        constraint_seed: seed of ``A`` and ``b``.
        sample_seed: seed of the batch-drawing generator.
        optimizer: SQP optimizer factory.
        stop_at_relative_kkt: see :class:`~framework.models.constrained_problem.ConstrainedProblemModule`.
    """

    def __init__(self, *, num_features: int = 31, num_constraints: int = 5, constraint_seed: int = 0,
                 sample_seed: int = 0, optimizer: OptimizerCallable | None = None,
                 stop_at_relative_kkt: float | None = None) -> None:
        super().__init__(optimizer=optimizer, stop_at_relative_kkt=stop_at_relative_kkt)
        self.save_hyperparameters(ignore=["optimizer"])
        for name, value in (("num_features", num_features), ("num_constraints", num_constraints)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if num_constraints >= num_features:
            raise ValueError(
                f"num_constraints must be smaller than num_features, got {num_constraints} >= {num_features}"
            )
        gen = torch.Generator().manual_seed(int(constraint_seed))
        self.register_buffer("constraint_matrix", torch.randn(num_constraints, num_features, generator=gen,
                                                              dtype=torch.float64))
        self.register_buffer("constraint_rhs", torch.randn(num_constraints, generator=gen, dtype=torch.float64))
        self.weight = nn.Parameter(torch.zeros(num_features, dtype=torch.float64))
        self.sample_generator = torch.Generator().manual_seed(int(sample_seed))
        self._data: Any = None
        self.register_stage_metrics(MetricCollection({"accuracy": BinaryAccuracy()}), stages=("val", "test"))

    # ------------------------------------------------------------------ data
    def attach_data(self, data: Any) -> None:
        """Use ``data.draw_batch(size, generator)`` for batches (done automatically from the Trainer's DataModule)."""
        if not callable(getattr(data, "draw_batch", None)):
            raise TypeError(f"{type(data).__name__} has no draw_batch(size, generator) method")
        self._data = data

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and callable(getattr(datamodule, "draw_batch", None)):
            self._data = datamodule

    # ------------------------------------------------------------------ protocol
    def constraints(self) -> Tensor:
        return self.constraint_matrix @ self.weight - self.constraint_rhs

    def objective(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        features, labels = batch
        margins = labels.to(self.weight) * (features.to(self.weight) @ self.weight)
        return F.softplus(-margins).mean()

    def draw_batch(self, size: int) -> tuple[Tensor, Tensor]:
        if self._data is None:
            raise RuntimeError(
                "ConstrainedLogisticRegression has no data: train it with ConstrainedLogisticDataModule or call "
                "attach_data(datamodule) first"
            )
        features, labels = self._data.draw_batch(size, self.sample_generator)
        return features.to(self.weight.device), labels.to(self.weight.device)

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        features, labels = batch
        loss = self.objective((features, labels))
        violation = torch.linalg.vector_norm(self.constraints())
        metrics = self.metrics_for(stage)
        metrics.update((features.to(self.weight) @ self.weight > 0).long(), (labels > 0).long())
        self.log_dict({f"{stage}/objective": loss, f"{stage}/constraint_violation": violation}, batch_size=len(labels))
        self.log_dict(metrics, batch_size=len(labels))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["sample_generator"] = self.sample_generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "sample_generator" in checkpoint:
            self.sample_generator.set_state(checkpoint["sample_generator"])
