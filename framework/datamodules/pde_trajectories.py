"""Trajectories of spatio-temporal systems for autoregressive forecasting, split by trajectory.

Systems (``system=``; options for the generator go in ``system_options``):

- ``"navier_stokes"``: 2-D incompressible NS, vorticity, pseudo-spectral (``framework.datamodules.pde.navier_stokes``);
- ``"diffusion_reaction"``: FitzHugh–Nagumo, PDEBench set-up, 2 channels (``framework.datamodules.pde.diffusion_reaction``);
- ``"shallow_water"``: radial dam break, depth (``framework.datamodules.pde.shallow_water``);
- ``"kuramoto_sivashinsky"``: 1-D KS as ``[1, 1, n]`` frames (``framework.datamodules.pde.kuramoto_sivashinsky``);
- ``"linear_ar1"``: the AR(1) sanity system with a known optimal forecast (``framework.datamodules.pde.linear_ar1``);
- ``"pdebench"``: a PDEBench HDF5 file at ``pdebench_path`` (``framework.datamodules.pde.pdebench_loader``).

Generated trajectories are cached with 🤗 datasets (keyed by every generator argument). The first
``num_trajectories − val_trajectories − test_trajectories`` trajectories train, the next ones validate, the last
ones test: no trajectory contributes to two splits (the paper trains and tests on two halves of *one* trajectory).
Frames are standardised per channel with the training trajectories' mean and standard deviation
(``normalize=True``); :meth:`PDETrajectories.denormalize` undoes it.

Batches are frame windows ``[B, T, C, H, W]``: training windows of ``window_length`` frames (every
``window_stride``-th start), evaluation windows of ``context_length + horizon`` frames starting at
``eval_starts`` (the first ``context_length`` frames condition, the rest are scored).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from framework.datamodules.pde.diffusion_reaction import simulate_diffusion_reaction
from framework.datamodules.pde.kuramoto_sivashinsky import simulate_kuramoto_sivashinsky
from framework.datamodules.pde.linear_ar1 import simulate_linear_ar1
from framework.datamodules.pde.navier_stokes import simulate_navier_stokes
from framework.datamodules.pde.pdebench_loader import load_pdebench, pdebench_layout
from framework.datamodules.pde.shallow_water import simulate_shallow_water
from framework.base import SplitDataModule
from framework.validation import require_choice

__all__ = ["PDETrajectories", "FrameWindows", "SYSTEMS", "generate_trajectories"]

_GENERATORS = {
    "navier_stokes": simulate_navier_stokes,
    "diffusion_reaction": simulate_diffusion_reaction,
    "shallow_water": simulate_shallow_water,
    "kuramoto_sivashinsky": simulate_kuramoto_sivashinsky,
    "linear_ar1": simulate_linear_ar1,
}
SYSTEMS = (*_GENERATORS, "pdebench")


def generate_trajectories(*, system: str, num_trajectories: int, num_frames: int, seed: int,
                          options: dict[str, Any]) -> dict[str, np.ndarray]:
    """``{"frames": [N, T, C, H, W]}`` from the named generator (the cache's generate function)."""
    require_choice("system", system, tuple(_GENERATORS))
    try:
        frames = _GENERATORS[system](num_trajectories=num_trajectories, num_frames=num_frames, seed=seed, **options)
    except TypeError as error:
        raise ValueError(f"bad system_options for {system!r}: {options!r} ({error})") from None
    if not np.isfinite(frames).all():
        raise ValueError(f"the {system!r} simulation produced non-finite values with options {options!r}; "
                         "reduce the time step")
    return {"frames": frames}


class FrameWindows(Dataset):
    """Windows ``[T, C, H, W]`` cut from trajectories ``[N, F, C, H, W]`` at the given ``(trajectory, start)`` pairs."""

    def __init__(self, frames: torch.Tensor, length: int, starts: list[tuple[int, int]]) -> None:
        self.frames, self.length, self.starts = frames, length, starts

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> torch.Tensor:
        traj, start = self.starts[index]
        return self.frames[traj, start:start + self.length]


class PDETrajectories(SplitDataModule):
    """Forecasting windows from many simulated (or PDEBench) trajectories.

    Args:
        system: one of ``SYSTEMS``.
        system_options: keyword arguments of the generator (e.g. ``{"resolution": 64, "viscosity": 1e-3}``) or, for
            ``"pdebench"``, of :func:`~framework.datamodules.pde.pdebench_loader.load_pdebench` (``fields``, strides).
        num_trajectories: trajectories to generate (or read at most, for PDEBench).
        num_frames: frames per generated trajectory.
        val_trajectories, test_trajectories: trajectories held out for validation / test (>= 1 each).
        window_length: frames per training window (>= 3: a conditioning frame, a reference and a target).
        window_stride: distance between training window starts.
        context_length: conditioning frames of an evaluation window (>= 2).
        horizon: forecast frames of an evaluation window (>= 1).
        eval_starts: start frames of the evaluation windows in every val/test trajectory (default ``[0]``).
        normalize: standardise channels with training statistics.
        pdebench_path: the ``.h5`` file for ``system="pdebench"``.
        batch_size, num_workers, seed, cache_dir, pin_memory: see ``FrameworkDataModule``.
    """

    def __init__(self, *, system: str = "diffusion_reaction", system_options: dict[str, Any] | None = None,
                 num_trajectories: int = 40, num_frames: int = 51, val_trajectories: int = 4,
                 test_trajectories: int = 4, window_length: int = 8, window_stride: int = 1, context_length: int = 2,
                 horizon: int = 10, eval_starts: list[int] | None = None, normalize: bool = True,
                 pdebench_path: str | None = None, batch_size: int = 16, num_workers: int = 0, seed: int = 0,
                 cache_dir: str | None = None, pin_memory: bool = False) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, cache_dir=cache_dir,
                         pin_memory=pin_memory)
        require_choice("system", system, SYSTEMS)
        for name, value, minimum in (("num_trajectories", num_trajectories, 3), ("num_frames", num_frames, 2),
                                     ("val_trajectories", val_trajectories, 1),
                                     ("test_trajectories", test_trajectories, 1),
                                     ("window_length", window_length, 3), ("window_stride", window_stride, 1),
                                     ("context_length", context_length, 2), ("horizon", horizon, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if num_trajectories - val_trajectories - test_trajectories < 1:
            raise ValueError(f"num_trajectories={num_trajectories} leaves no training trajectory after "
                             f"val_trajectories={val_trajectories} and test_trajectories={test_trajectories}")
        eval_starts = [0] if eval_starts is None else [int(s) for s in eval_starts]
        if not eval_starts or min(eval_starts) < 0:
            raise ValueError(f"eval_starts must be non-negative frame indices, got {eval_starts!r}")
        if system == "pdebench":
            if pdebench_path is None:
                raise ValueError("system='pdebench' needs pdebench_path, the PDEBench .h5 file to read")
            layout = pdebench_layout(pdebench_path)  # the file's index only: missing, empty, non-HDF5 files fail here
            fields = (system_options or {}).get("fields")
            absent = [f for f in fields or [] if f not in layout["keys"]] if layout["layout"] == "stacked" else []
            if absent:
                raise ValueError(f"system_options.fields {absent} are not in pdebench_path={pdebench_path!r}; "
                                 f"available: {layout['keys']}")
        else:
            self._check_length(num_frames, window_length, context_length, horizon, eval_starts)
        self.system, self.system_options = system, dict(system_options or {})
        self.num_trajectories, self.num_frames = num_trajectories, num_frames
        self.val_trajectories, self.test_trajectories = val_trajectories, test_trajectories
        self.window_length, self.window_stride = window_length, window_stride
        self.context_length, self.horizon, self.eval_starts = context_length, horizon, eval_starts
        self.normalize, self.pdebench_path = normalize, pdebench_path
        self.datasets: dict[str, FrameWindows] = {}
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self._frames: torch.Tensor | None = None

    @staticmethod
    def _check_length(num_frames: int, window_length: int, context_length: int, horizon: int,
                      eval_starts: list[int]) -> None:
        if num_frames < window_length:
            raise ValueError(f"trajectories of {num_frames} frames are shorter than window_length={window_length}")
        needed = max(eval_starts) + context_length + horizon
        if num_frames < needed:
            raise ValueError(f"trajectories of {num_frames} frames are shorter than the evaluation window: "
                             f"eval start {max(eval_starts)} + context_length {context_length} + horizon {horizon} "
                             f"= {needed} frames")

    # ------------------------------------------------------------------ data
    def load_frames(self) -> np.ndarray:
        """All trajectories ``[N, T, C, H, W]`` (generated once and cached, or read from the PDEBench file)."""
        if self.system == "pdebench":
            frames = load_pdebench(self.pdebench_path, max_trajectories=self.num_trajectories, **self.system_options)
            self._check_length(frames.shape[1], self.window_length, self.context_length, self.horizon,
                               self.eval_starts)
            if frames.shape[0] < self.val_trajectories + self.test_trajectories + 1:
                raise ValueError(f"{self.pdebench_path!r} holds {frames.shape[0]} trajectories; need at least "
                                 f"{self.val_trajectories + self.test_trajectories + 1} for the three splits")
            return frames
        dataset = self.cached(f"pde_{self.system}", generate_trajectories, version=2, system=self.system,
                              num_trajectories=self.num_trajectories, num_frames=self.num_frames, seed=self.seed,
                              options=self.system_options)
        return dataset[:]["frames"]

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        frames = torch.from_numpy(np.ascontiguousarray(self.load_frames())).float()
        n = frames.shape[0]
        n_train = n - self.val_trajectories - self.test_trajectories
        if self.normalize:
            train = frames[:n_train]
            self.mean = train.mean(dim=(0, 1, 3, 4))
            self.std = train.std(dim=(0, 1, 3, 4)).clamp_min(1e-8)
            frames = (frames - self.mean[:, None, None]) / self.std[:, None, None]
        self._frames = frames
        t = frames.shape[1]
        train_starts = [(i, s) for i in range(n_train) for s in range(0, t - self.window_length + 1, self.window_stride)]
        eval_len = self.context_length + self.horizon
        val_ids = range(n_train, n_train + self.val_trajectories)
        test_ids = range(n_train + self.val_trajectories, n)
        self.datasets = {
            "train": FrameWindows(frames, self.window_length, train_starts),
            "val": FrameWindows(frames, eval_len, [(i, s) for i in val_ids for s in self.eval_starts]),
            "test": FrameWindows(frames, eval_len, [(i, s) for i in test_ids for s in self.eval_starts]),
        }

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one frame (after :meth:`setup`)."""
        if self._frames is None:
            self.setup()
        return tuple(self._frames.shape[2:])

    def denormalize(self, frames: torch.Tensor) -> torch.Tensor:
        """Undo the standardisation of ``[..., C, H, W]`` frames."""
        if self.mean is None:
            return frames
        mean = self.mean.to(frames)[:, None, None]
        std = self.std.to(frames)[:, None, None]
        return frames * std + mean

