"""What a callback needs from the model it is attached to, checked in ``setup`` — never a silent no-op.

A callback that cannot serve a model raises :class:`UnsupportedModelError` from its ``setup`` hook, before any
training step, naming the model, what it lacks and what to implement (a protocol, a method, an attribute).
:func:`first_batch` gives ``setup``-time checks one batch of the run's own data (so shapes can be checked and
defaults such as ``num_classes`` inferred).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch

__all__ = ["UnsupportedModelError", "first_batch", "missing_members", "require_members", "truncate_batch"]


class UnsupportedModelError(ValueError):
    """A callback cannot serve this model; the message says what the model lacks and what to implement."""


def missing_members(obj: Any, requirements: Mapping[str, str]) -> list[str]:
    """Descriptions (``requirements[name]``) of the members ``obj`` lacks; a name ending in ``()`` must be callable."""
    missing = []
    for name, description in requirements.items():
        attribute = name[:-2] if name.endswith("()") else name
        value = getattr(obj, attribute, None)
        if value is None or (name.endswith("()") and not callable(value)):
            missing.append(f"`{name[:-2] + '(...)' if name.endswith('()') else name}` ({description})")
    return missing


def require_members(callback: str, obj: Any, requirements: Mapping[str, str], *, what: str, remedy: str) -> None:
    """Raise :class:`UnsupportedModelError` when ``obj`` (described as ``what``) lacks any of ``requirements``."""
    missing = missing_members(obj, requirements)
    if missing:
        raise UnsupportedModelError(f"{callback} cannot serve {what}: it lacks {'; '.join(missing)}. {remedy}")




def _data_source(trainer: pl.Trainer, split: str):
    if split == "train":
        return trainer.fit_loop._data_source
    if split == "test":
        return trainer.test_loop._data_source
    if trainer.state.fn == "validate":
        return trainer.validate_loop._data_source
    return trainer.fit_loop.epoch_loop.val_loop._data_source


def first_batch(trainer: pl.Trainer, split: str) -> Any | None:
    """The first batch of the run's ``split`` dataloader (``"train"``, ``"val"`` or ``"test"``), or None without one.

    Works from ``setup`` (the loaders passed to ``fit`` / ``validate`` / ``test`` or the datamodule's / module's
    ``*_dataloader()``); the global RNG is left untouched.
    """
    try:
        source = _data_source(trainer, split)
        if source is None or not source.is_defined():
            return None
        loader = source.dataloader()
    except Exception:  # noqa: BLE001 - a split that is not set up in this stage counts as absent
        return None
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    if isinstance(loader, dict):
        loader = next(iter(loader.values()), None)
    if loader is None:
        return None
    with torch.random.fork_rng(devices=[]):
        return next(iter(loader), None)


def truncate_batch(batch: Any, size: int = 2) -> Any:
    """``batch`` with every tensor cut to its first ``size`` rows (a cheap dry run)."""
    if isinstance(batch, torch.Tensor):
        return batch[:size] if batch.dim() > 0 else batch
    if isinstance(batch, Mapping):
        return {k: truncate_batch(v, size) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        items = [truncate_batch(v, size) for v in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)
    return batch
