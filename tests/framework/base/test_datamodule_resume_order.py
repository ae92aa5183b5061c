"""A resumed run shuffles epoch e's order from its first batch (the sampler's epoch is set when the loader is built,
before Lightning draws batches with workers), for every FrameworkDataModule, not one DataModule at a time."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch.utils.data import TensorDataset

from framework.base import FrameworkDataModule
from framework.base.datamodule import EpochSeededRandomSampler


class _Data(FrameworkDataModule):
    def train_dataloader(self):
        return self.make_dataloader(TensorDataset(torch.arange(32)), shuffle=True)


def test_loader_built_at_epoch_e_yields_epoch_e_order():
    data = _Data(batch_size=32, seed=5)
    data.trainer = SimpleNamespace(current_epoch=3, world_size=1, num_devices=1, num_nodes=1, global_rank=0)
    first = next(iter(data.train_dataloader()))[0].tolist()
    reference = EpochSeededRandomSampler(range(32), seed=5)
    reference.set_epoch(3)
    assert first == list(iter(reference))
    reference.set_epoch(0)
    assert first != list(iter(reference))  # epoch 0's order is a different permutation
