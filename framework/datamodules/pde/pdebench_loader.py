"""Read 2-D PDEBench HDF5 files from a path the user gives (nothing is downloaded).

Two layouts occur in PDEBench's 2-D files:

- **one group per seed** (``2D_diff-react_NA_NA.h5``, ``2D_rdb_NA_NA.h5``): groups ``"0000"``, ``"0001"``, …, each
  with a ``"data"`` dataset ``[T, H, W, C]`` (and ``grid/x``, ``grid/y``, ``grid/t``);
- **stacked fields** (``ns_incom_inhom_2d_512-*.h5``: ``"velocity" [N, T, H, W, 2]``; the compressible CFD files:
  ``"density"``, ``"pressure"``, ``"Vx"``, ``"Vy"``, each ``[N, T, H, W]``).

:func:`load_pdebench` returns ``[N, T, C, H, W]`` float32 for either, with optional strides in time and space and a
cap on the number of trajectories. Reading needs ``h5py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from framework.base.data_files import check_hdf5_file

__all__ = ["load_pdebench", "pdebench_layout"]


def _h5py():
    try:
        import h5py
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("reading PDEBench files needs h5py: pip install h5py") from error
    return h5py


def pdebench_layout(path: str | Path) -> dict:
    """``{"layout": "seed_groups" | "stacked", "keys": [...]}`` of a PDEBench HDF5 file (reads only its index).

    Raises:
        FileNotFoundError / ValueError naming the file when it is missing, empty, not HDF5, unreadable (truncated) or
        not in a PDEBench 2-D layout.
    """
    h5py = _h5py()
    path = check_hdf5_file("pdebench_path", path)
    try:
        with h5py.File(path, "r") as f:
            groups = sorted(k for k in f.keys() if isinstance(f[k], h5py.Group) and "data" in f[k])
            if groups:
                return {"layout": "seed_groups", "keys": groups}
            stacked = sorted(k for k in f.keys() if isinstance(f[k], h5py.Dataset) and f[k].ndim >= 4)
            if stacked:
                return {"layout": "stacked", "keys": stacked}
    except OSError as error:  # h5py: truncated / damaged files
        raise ValueError(f"pdebench_path={str(path)!r} cannot be read as HDF5 ({error})") from None
    raise ValueError(f"{str(path)!r} is not a PDEBench 2-D file: no '<seed>/data' groups and no "
                     "[N, T, H, W(, C)] datasets found")


def load_pdebench(path: str | Path, *, fields: list[str] | None = None, max_trajectories: int | None = None,
                  frame_stride: int = 1, spatial_stride: int = 1) -> np.ndarray:
    """Trajectories ``[N, T, C, H, W]`` float32 from a PDEBench 2-D HDF5 file.

    Args:
        path: the ``.h5`` file.
        fields: stacked layout only: datasets to read, concatenated along channels in this order (default: every
            ``[N, T, H, W(, C)]`` dataset, sorted by name). Seed-group files ignore it.
        max_trajectories: read at most this many trajectories (seeds or rows).
        frame_stride, spatial_stride: keep every k-th frame / grid point.
    """
    for name, value in (("frame_stride", frame_stride), ("spatial_stride", spatial_stride)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if max_trajectories is not None and (not isinstance(max_trajectories, int) or max_trajectories < 1):
        raise ValueError(f"max_trajectories must be a positive integer or None, got {max_trajectories!r}")
    h5py = _h5py()
    info = pdebench_layout(path)
    sl = (slice(None, None, frame_stride), slice(None, None, spatial_stride), slice(None, None, spatial_stride))
    with h5py.File(Path(path).expanduser(), "r") as f:
        if info["layout"] == "seed_groups":
            seeds = info["keys"][:max_trajectories]
            arrays = []
            for seed in seeds:
                data = np.asarray(f[seed]["data"][sl])  # [T, H, W, C]
                if data.ndim == 3:
                    data = data[..., None]
                arrays.append(np.moveaxis(data, -1, 1))  # [T, C, H, W]
            out = np.stack(arrays)
        else:
            names = fields or info["keys"]
            missing = [n for n in names if n not in info["keys"]]
            if missing:
                raise ValueError(f"fields {missing} not in {str(path)!r}; available: {info['keys']}")
            parts = []
            for name in names:
                ds = f[name]
                rows = slice(0, max_trajectories)
                data = np.asarray(ds[(rows, *sl)])  # [N, T, H, W(, C)]
                if data.ndim == 4:
                    data = data[..., None]
                parts.append(np.moveaxis(data, -1, 2))  # [N, T, C, H, W]
            lengths = {p.shape[:2] for p in parts}
            if len(lengths) != 1:
                raise ValueError(f"fields {names} have different [N, T] shapes {sorted(lengths)}")
            out = np.concatenate(parts, axis=2)
    return out.astype(np.float32)
