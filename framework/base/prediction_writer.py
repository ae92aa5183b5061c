"""``PredictionWriter``: what ``python -m framework predict`` saves, in one format for every method.

Each ``predict`` command writes a folder ``<output root>/predictions/<ModelClass>-<YYYYmmdd-HHMMSS>/`` (output root:
``trainer.default_root_dir`` when set, else ``outputs/``; never the working directory) holding

* ``predictions.pt`` (``torch.load(..., weights_only=True)``): ``{"format": 1, "model_class": str, "ckpt_path":
  str | None, "predictions": P}`` where ``P`` has the structure of the model's ``predict_step`` output (a tensor, a
  dict or a list of them) with the batches joined: every tensor is concatenated along its *batch dimension*, the
  first dimension whose length equals the batch's number of samples in every batch (dimension 0 for most models,
  dimension 1 for an ensemble's ``[members, batch, ...]``); a tensor without such a dimension stays a list of
  per-batch tensors. With several predict dataloaders ``P`` is a list, one entry per dataloader. Under DDP each rank
  writes ``predictions-rank<r>.pt`` with its own share and ``"batch_indices"`` (sample indices per batch).
* ``manifest.json``: the same header plus, for every tensor, its key path, shape, dtype and batch dimension.

Both files are written to temporary names and renamed into place. The CLI attaches a writer to every ``predict``
command that has none; give ``PredictionWriter`` (or any ``BasePredictionWriter``) in ``trainer.callbacks`` to
choose the folder.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from framework.atomic_files import write_atomic, write_json_atomic
from framework.base.output_root import output_root

__all__ = ["PREDICTION_FORMAT", "PredictionWriter", "check_predict_support", "ensure_prediction_writer", "join_batches",
           "num_samples"]

PREDICTION_FORMAT = 1


def num_samples(batch: Any) -> int | None:
    """Samples in a batch: dimension 0 of its first tensor (batches are tensors, tuples/lists or dicts of them)."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.ndim else None
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        found = num_samples(value)
        if found is not None:
            return found
    return None


def _batch_dim(tensors: Sequence[Tensor], sizes: Sequence[int | None]) -> int | None:
    if any(size is None for size in sizes) or len({t.ndim for t in tensors}) != 1:
        return None
    for dim in range(tensors[0].ndim):
        if all(t.shape[dim] == size for t, size in zip(tensors, sizes)):
            rest = {tuple(s for d, s in enumerate(t.shape) if d != dim) for t in tensors}
            if len(rest) == 1:
                return dim
    return None


def join_batches(outputs: Sequence[Any], sizes: Sequence[int | None]) -> Any:
    """Join per-batch ``predict_step`` outputs (see the module docstring); tensors end on the CPU."""
    first = outputs[0]
    if isinstance(first, Tensor):
        tensors = [o.detach().cpu() for o in outputs]
        dim = _batch_dim(tensors, sizes)
        return torch.cat(tensors, dim=dim) if dim is not None else tensors
    if isinstance(first, dict):
        return {key: join_batches([o[key] for o in outputs], sizes) for key in first}
    if isinstance(first, (list, tuple)):
        return [join_batches([o[i] for o in outputs], sizes) for i in range(len(first))]
    return list(outputs)


def _describe(value: Any, sizes: Sequence[int | None], path: str = "predictions") -> list[dict[str, Any]]:
    if isinstance(value, Tensor):
        total = sum(s for s in sizes if s is not None)
        dims = [d for d in range(value.ndim) if value.shape[d] == total]
        return [{"key": path, "shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch."),
                 "batch_dim": dims[0] if dims else None}]
    if isinstance(value, dict):
        return [entry for key, item in value.items() for entry in _describe(item, sizes, f"{path}.{key}")]
    if isinstance(value, list) and value and all(isinstance(v, Tensor) for v in value):
        return [{"key": path, "per_batch": [list(v.shape) for v in value]}]
    if isinstance(value, list):
        return [entry for i, item in enumerate(value) for entry in _describe(item, sizes, f"{path}[{i}]")]
    return [{"key": path, "type": type(value).__name__}]


class PredictionWriter(BasePredictionWriter):
    """Saves every ``predict`` batch's output, joined, to ``predictions.pt`` + ``manifest.json`` (module docstring).

    Args:
        output_dir: the folder (default ``<output root>/predictions/<ModelClass>-<time>``).
    """

    def __init__(self, *, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.written: Path | None = None
        self._outputs: dict[int, list[Any]] = {}
        self._sizes: dict[int, list[int | None]] = {}
        self._indices: dict[int, list[Any]] = {}

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self._outputs, self._sizes, self._indices = {}, {}, {}

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx) -> None:
        self._outputs.setdefault(dataloader_idx, []).append(prediction)
        self._sizes.setdefault(dataloader_idx, []).append(num_samples(batch))
        self._indices.setdefault(dataloader_idx, []).append(list(batch_indices) if batch_indices is not None else None)

    def _folder(self, trainer, pl_module) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = output_root(trainer) / "predictions"
        # The folder name is agreed on rank 0 and broadcast, so that all ranks write into the same one.
        name = trainer.strategy.broadcast(f"{type(pl_module).__name__}-{stamp}")
        folder, n = base / name, 1
        while trainer.is_global_zero and folder.exists():
            folder, n = base / f"{name}-{n}", n + 1
        return Path(trainer.strategy.broadcast(str(folder)))

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        loaders = sorted(self._outputs)
        joined = [join_batches(self._outputs[i], self._sizes[i]) for i in loaders]
        header = {"format": PREDICTION_FORMAT,
                  "model_class": f"{type(pl_module).__module__}.{type(pl_module).__qualname__}",
                  "ckpt_path": str(trainer.ckpt_path) if trainer.ckpt_path else None}
        payload = {**header, "predictions": joined[0] if len(joined) == 1 else joined}
        if trainer.world_size > 1:
            payload["batch_indices"] = [self._indices[i] for i in loaders]
        folder = self._folder(trainer, pl_module)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = f"-rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        target = folder / f"predictions{suffix}.pt"
        write_atomic(target, lambda handle: torch.save(payload, handle))
        if len(loaders) == 1:
            entries = _describe(joined[0], self._sizes[loaders[0]])
        else:
            entries = [e for k, i in enumerate(loaders) for e in _describe(joined[k], self._sizes[i],
                                                                          f"predictions[{k}]")]
        manifest = {**header, "file": target.name, "num_batches": sum(len(self._sizes[i]) for i in loaders),
                    "entries": entries}
        write_json_atomic(folder / f"manifest{suffix}.json", manifest, indent=2, trailing_newline=True)
        self.written = target
        self._outputs, self._sizes, self._indices = {}, {}, {}


def check_predict_support(model, datamodule) -> None:
    """Raise ``ValueError`` naming the class when ``predict`` cannot run: no ``predict_step`` in the model (or, for a
    model not based on ``FrameworkModule``, no ``forward`` either), or no ``predict_dataloader`` in the DataModule."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    from framework.base.lit_module import FrameworkModule

    # Lightning's default predict_step calls forward(batch); the project's models take other forward arguments than
    # a batch, so they predict only through their own predict_step. A user's plain LightningModule may rely on it.
    runs_default = not isinstance(model, FrameworkModule) and is_overridden("forward", model)
    if not (is_overridden("predict_step", model) or runs_default):
        raise ValueError(f"{type(model).__name__} has no predict_step, so `predict` cannot run it; use `test` for "
                         "its evaluation")
    if datamodule is not None and not is_overridden("predict_dataloader", datamodule):
        raise ValueError(f"{type(datamodule).__name__} has no predict_dataloader, so `predict` has no data; use "
                         "`test` for its evaluation")


def ensure_prediction_writer(trainer) -> None:
    """Attach a :class:`PredictionWriter` unless ``trainer`` already has a ``BasePredictionWriter``."""
    if not any(isinstance(callback, BasePredictionWriter) for callback in trainer.callbacks):
        trainer.callbacks.append(PredictionWriter())
