"""Collocation, initial and boundary points of the 1-D convection problem (Krishnapriyan et al. 2021).

Domain x ∈ [0, 2π) on ``nx`` points, t ∈ [0, 1] on ``nt`` points. One training batch holds everything a PINN loss
needs (full-batch training, as in the original):

* ``collocation [N_f, 2]``: (x, t) drawn without replacement from the interior grid points (t > 0, x > 0) with
  ``numpy.random.RandomState(collocation_seed)`` in row-major (t, x) order — the same points as the original code's
  legacy global RNG seeded 0;
* ``initial [nx, 2]`` and ``initial_u [nx]``: t = 0 with u(x, 0) = sin x;
* ``boundary_left [nt, 2]`` / ``boundary_right [nt, 2]``: x = 0 and x = 2π for every t (periodic boundary).

Validation / test batches are ``points [B, 2]`` of the full ``nt × nx`` grid; the model compares its prediction with
the exact solution (it owns β).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from framework.base import FrameworkDataModule

__all__ = ["ConvectionCollocation", "convection_grid"]


def convection_grid(nx: int, nt: int) -> tuple[np.ndarray, np.ndarray]:
    """``x [nx]`` = linspace(0, 2π, nx, endpoint=False) and ``t [nt]`` = linspace(0, 1, nt)."""
    return np.linspace(0.0, 2.0 * math.pi, nx, endpoint=False), np.linspace(0.0, 1.0, nt)


class _OneBatch(Dataset):
    """A dataset of one item: the whole training set as a dict of tensors (full-batch training)."""

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index != 0:
            raise IndexError(index)
        return self.batch


def _identity_collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return items[0]


class ConvectionCollocation(FrameworkDataModule):
    """Points of u_t + β u_x = 0 on [0, 2π) × [0, 1] (see module docstring).

    Args:
        n_collocation: N_f interior collocation points (original setting 100; ≤ (nx − 1)(nt − 1)).
        nx: spatial grid points (256 in the paper).
        nt: time grid points (100 in the paper).
        collocation_seed: seed of the collocation draw (0 in the original code).
        batch_size: evaluation batch size on the full grid (training is full-batch).
        seed, num_workers, cache_dir, pin_memory: see ``FrameworkDataModule``.
    """

    def __init__(
        self,
        *,
        n_collocation: int = 100,
        nx: int = 256,
        nt: int = 100,
        collocation_seed: int = 0,
        batch_size: int = 25_600,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, cache_dir=cache_dir,
                         pin_memory=pin_memory)
        for name, value, low in (("nx", nx, 3), ("nt", nt, 3), ("n_collocation", n_collocation, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if n_collocation > (nx - 1) * (nt - 1):
            raise ValueError(f"n_collocation={n_collocation} exceeds the {(nx - 1) * (nt - 1)} interior grid points "
                             f"of nx={nx}, nt={nt}")
        self.n_collocation = n_collocation
        self.nx = nx
        self.nt = nt
        self.collocation_seed = collocation_seed
        self.train_batch: dict[str, torch.Tensor] | None = None
        self.grid_points: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_batch is not None:
            return
        x, t = convection_grid(self.nx, self.nt)
        xx, tt = np.meshgrid(x, t)  # [nt, nx], row-major (t, x)
        points = np.stack([xx.ravel(), tt.ravel()], axis=1)
        interior = points[(points[:, 1] > 0) & (points[:, 0] > 0)]
        chosen = np.random.RandomState(self.collocation_seed).choice(len(interior), self.n_collocation,
                                                                      replace=False)
        as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        self.train_batch = {
            "collocation": as_tensor(interior[chosen]),
            "initial": as_tensor(np.stack([x, np.zeros_like(x)], axis=1)),
            "initial_u": as_tensor(np.sin(x)),
            "boundary_left": as_tensor(np.stack([np.zeros_like(t), t], axis=1)),
            "boundary_right": as_tensor(np.stack([np.full_like(t, 2.0 * math.pi), t], axis=1)),
        }
        self.grid_points = as_tensor(points)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_OneBatch(self.train_batch), batch_size=1, collate_fn=_identity_collate)

    def val_dataloader(self) -> DataLoader:
        return self.make_dataloader(TensorDataset(self.grid_points), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()
