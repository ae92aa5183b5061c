"""Shared LightningDataModule base: global batch size split over ranks, seeded loaders, dataset cache."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sized
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from framework.base.dataset_cache import load_or_generate
from framework.validation import require_non_negative, require_positive

__all__ = ["EpochSeededRandomSampler", "FrameworkDataModule", "SplitDataModule"]


class EpochSeededRandomSampler(Sampler[int]):
    """Random permutation that depends only on ``(seed, epoch)``.

    Lightning calls ``set_epoch`` before every epoch, so the order of epoch ``e`` is the same whether the run
    started at epoch 0 or was resumed from a checkpoint (a shared ``torch.Generator`` would restart its stream).
    """

    def __init__(self, data_source: Sized, *, seed: int) -> None:
        self.data_source = data_source
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data_source)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(len(self.data_source), generator=generator).tolist())


def _seed_worker(worker_id: int) -> None:
    # Each worker gets a distinct, reproducible numpy/random seed derived from torch's per-worker seed.
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class FrameworkDataModule(pl.LightningDataModule):
    """Base for the project's DataModules.

    ``batch_size`` is the *global* batch size: under DDP each of the ``world_size`` ranks loads
    ``batch_size // world_size`` samples per step (an error if it does not divide), so a config means the same
    optimisation problem on 1 or N devices.

    Args:
        batch_size: global batch size (> 0).
        num_workers: DataLoader worker processes per rank (>= 0).
        seed: seed of data generation and of the training-loader shuffling.
        cache_dir: where generated datasets are cached (default ``$FRAMEWORK_CACHE_DIR`` or
            ``~/.cache/framework/datasets``).
        pin_memory: pin host memory (useful on GPU).
    """

    def __init__(
        self,
        *,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or isinstance(batch_size, bool):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        require_positive("batch_size", batch_size)
        if not isinstance(num_workers, int):
            raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        require_non_negative("num_workers", num_workers)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.cache_dir = cache_dir
        self.pin_memory = pin_memory

    # ------------------------------------------------------------------ batch size
    @property
    def world_size(self) -> int:
        trainer = self.trainer
        return int(trainer.world_size) if trainer is not None else 1

    @property
    def per_device_batch_size(self) -> int:
        """``batch_size // world_size``; raises if the global batch size does not divide evenly."""
        world = self.world_size
        if self.batch_size % world != 0:
            raise ValueError(
                f"data.init_args.batch_size={self.batch_size} is the global batch size and must be divisible by "
                f"the number of processes ({world})"
            )
        return self.batch_size // world

    # ------------------------------------------------------------------ loaders
    def make_dataloader(
        self, dataset: Dataset, *, shuffle: bool, drop_last: bool = False, collate_fn: Callable | None = None,
        batch_size: int | None = None,
    ) -> DataLoader:
        """A DataLoader with the per-device batch size, epoch-seeded shuffling and seeded workers."""
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        if shuffle:
            sampler = EpochSeededRandomSampler(dataset, seed=self.seed)
            # Lightning builds the iterator (and, with workers, draws the first batches) before it calls set_epoch:
            # a run resumed at epoch e must shuffle epoch e's order from its first batch, not epoch 0's.
            if self.trainer is not None:
                sampler.set_epoch(self.trainer.current_epoch)
        elif self.world_size > 1:
            if len(dataset) < self.world_size:
                raise ValueError(
                    f"an evaluation set of {len(dataset)} samples cannot be split over {self.world_size} processes "
                    "(every rank needs at least one); use fewer devices for evaluation"
                )
            # Evaluation under DDP: each sample on exactly one rank (Lightning's default DistributedSampler pads
            # with repeated samples, which would count them twice in reported test numbers). Ranks may then see
            # different numbers of batches: fine for torchmetrics states, which sync once at epoch end.
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=self.world_size,
                                                   rank=self.trainer.global_rank, shuffle=False)
        else:
            sampler = None
        return DataLoader(
            dataset,
            batch_size=batch_size or self.per_device_batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=_seed_worker,
            generator=generator,
            collate_fn=collate_fn,
        )

    # ------------------------------------------------------------------ cache
    def cached(self, name: str, generate: Callable[..., Mapping[str, Any]], *, version: str | int = 1, **kwargs: Any):
        """Generate-once helper: see :func:`framework.base.dataset_cache.load_or_generate`."""
        cache_dir = Path(self.cache_dir).expanduser() if self.cache_dir else None
        return load_or_generate(name, generate, version=version, cache_dir=cache_dir, **kwargs)


class SplitDataModule(FrameworkDataModule):
    """A :class:`FrameworkDataModule` whose ``setup`` fills ``self.datasets`` with named splits; the four loaders read
    them: ``"train"`` shuffled, ``"val"`` and ``"test"`` in order, predict on ``predict_split``.

    Subclasses override :meth:`collate` for a split-specific collate function, or a loader method where a stage
    reads several splits.
    """

    predict_split = "test"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.datasets: dict[str, Dataset] = {}

    def collate(self, split: str) -> Callable | None:
        """Collate function of `split`'s loader (None: the default collation)."""
        return None

    def split_dataloader(self, split: str, *, shuffle: bool = False) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(
                f"{type(self).__name__} has no {split!r} split (have: {sorted(self.datasets) or 'none'}); "
                "call setup() before asking for a loader"
            )
        return self.make_dataloader(self.datasets[split], shuffle=shuffle, collate_fn=self.collate(split))

    def train_dataloader(self) -> DataLoader:
        return self.split_dataloader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.split_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.split_dataloader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.split_dataloader(self.predict_split)
