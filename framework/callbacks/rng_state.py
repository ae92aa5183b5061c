"""Random-number-generator state carried through checkpoints, so a resumed run draws the same numbers as an
uninterrupted one.

Lightning restores the model, optimizers, schedulers, loops and callback states from ``--ckpt_path`` but not the
global RNGs (Python ``random``, NumPy, torch CPU and CUDA). A resumed run therefore re-seeds from
``seed_everything`` and its dropout masks, reparameterisation noise or flow-matching times differ from the run it
continues. This callback stores the four states in the checkpoint (as plain tensors and lists, loadable with
``weights_only=True``) and puts them back at ``on_train_start`` — after the sanity-check validation, which may itself
draw random numbers, and before the first training batch.

Data order is not this callback's business: ``FrameworkDataModule`` shuffles with a sampler seeded by
``(seed, epoch)`` and gives the DataLoader its own generator, so no loader draws from the global RNGs.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

__all__ = ["RNGStateCheckpoint", "capture_rng_state", "restore_rng_state"]


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states as ``{"python", "numpy", "torch", "cuda"}`` (tensors, lists and ints only)."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`; raises ``ValueError`` naming a missing or malformed entry."""
    missing = [k for k in ("python", "numpy", "torch", "cuda") if k not in state]
    if missing:
        raise ValueError(f"RNG state in the checkpoint lacks {missing}; was it written by RNGStateCheckpoint?")
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = list(state["cuda"])
    if cuda:
        if not torch.cuda.is_available() or torch.cuda.device_count() < len(cuda):
            raise ValueError(f"the checkpoint holds CUDA RNG states of {len(cuda)} devices; this process sees "
                             f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}")
        torch.cuda.set_rng_state_all(cuda)


class RNGStateCheckpoint(pl.Callback):
    """Saves the global RNG states with every checkpoint and restores them when training resumes from one.

    Exact when the model draws its random numbers from the global generators (the CLI's ``seed_everything`` seeds
    them) and nothing draws between the checkpoint and the next training batch; see docs/framework.md, "Runs across
    short GPU slots". Single process only: Lightning keeps rank 0's callback state, so under DDP the other ranks'
    streams would get rank 0's state (the callback raises rather than do that).
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return capture_rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Applied at on_train_start: restoring happens before the sanity check, which may draw random numbers.
        self._pending = dict(state_dict)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            raise ValueError(f"RNGStateCheckpoint restores one process's RNG state; this run has "
                             f"world_size={trainer.world_size} (remove the callback, or train on one device)")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            restore_rng_state(self._pending)
            self._pending = None
