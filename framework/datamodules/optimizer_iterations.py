"""A DataModule whose training loader only counts optimizer iterations.

Models that draw their own batches (``draw_batch(size)`` of the constrained-problem protocol) ignore the loader's
batches; Lightning still needs a loader to drive ``training_step``. Each epoch has ``iterations`` steps; cap the run
with ``trainer.max_steps``.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from framework.base import FrameworkDataModule

__all__ = ["OptimizerIterationsDataModule"]


class OptimizerIterationsDataModule(FrameworkDataModule):
    """Yields the iteration index (a tensor of shape ``(1,)``) ``iterations`` times per epoch.

    Args:
        iterations: steps per epoch (> 0).
        seed: kept for the CLI's seeding conventions.
    """

    def __init__(self, *, iterations: int = 1000, seed: int = 0) -> None:
        super().__init__(batch_size=1, num_workers=0, seed=seed)
        if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations <= 0:
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
        self.iterations = iterations

    def train_dataloader(self) -> DataLoader:
        return self.make_dataloader(TensorDataset(torch.arange(self.iterations)), shuffle=False)
