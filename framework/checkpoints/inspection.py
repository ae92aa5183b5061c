"""Check a checkpoint file before anything is built: readable, a Lightning checkpoint, made by the expected model.

``fit``/``validate``/``test``/``predict --ckpt_path FILE`` call :func:`check_checkpoint` at parse time (before the
model, the data or any logger exists), so a missing, truncated, garbled or foreign checkpoint is one error naming the
file instead of a traceback after a W&B run was opened.
"""

from __future__ import annotations

import importlib
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from framework.checkpoints.last_state import RUN_RECORD_KEY

__all__ = ["CheckpointError", "CheckpointSummary", "check_checkpoint", "is_checkpoint_alias", "read_checkpoint",
           "resolve_class"]

#: ``ckpt_path`` values that Lightning resolves itself from the trainer's checkpoint callbacks.
_ALIASES = ("last", "best", "hpc")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class CheckpointSummary:
    """What the check learned about a checkpoint.

    Attributes:
        path: the file.
        model_class: class path of the model that wrote it (``None`` when the checkpoint does not say).
        epoch, global_step: training progress stored in it.
        wandb_run_id, wandb_project: the W&B run that was logging when it was written (``None`` if none).
    """

    path: Path
    model_class: str | None
    epoch: int | None
    global_step: int | None
    wandb_run_id: str | None
    wandb_project: str | None


def is_checkpoint_alias(value: str) -> bool:
    """True for ``ckpt_path`` values that are not files: Lightning's "last"/"best"/"hpc", "registry..." and URLs."""
    return value in _ALIASES or value.startswith("registry") or "://" in value


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _torch_load(path: Path) -> Any:
    # mmap: a multi-GB checkpoint is inspected without reading its tensors into memory.
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        if "weights_only" not in str(error) and "Weights only load failed" not in str(error):
            raise
    # Hyper-parameters holding non-tensor objects (the user's own file, which Lightning would load the same way).
    return torch.load(path, map_location="cpu", weights_only=False, mmap=True)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint file (tensors memory-mapped) or raise :class:`CheckpointError` naming it."""
    path = Path(path).expanduser()
    where = f"checkpoint {str(path)!r}"
    if not path.exists():
        raise CheckpointError(f"{where} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{where} is a directory; pass the .ckpt file (e.g. {str(path / 'last.ckpt')!r})")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{where} is not readable (permission denied)")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{where} is empty (0 bytes); it was probably cut off while being written")
    if not zipfile.is_zipfile(path):
        # torch.save writes a zip archive; anything else is garbled, truncated (the zip directory is at the end) or
        # not a PyTorch file at all. Legacy (pre-1.6) pickled checkpoints are tried below all the same.
        try:
            with path.open("rb") as handle:
                legacy = handle.read(2) == b"\x80\x02"
        except OSError as error:
            raise CheckpointError(f"{where} cannot be read ({_first_line(error)})") from None
        if not legacy:
            raise CheckpointError(f"{where} is not a PyTorch checkpoint ({size} bytes, not a torch.save zip "
                                  "archive): truncated, garbled or a different kind of file")
    try:
        checkpoint = _torch_load(path)
    except Exception as error:  # noqa: BLE001 - every way of failing becomes one message naming the file
        raise CheckpointError(f"{where} is corrupt or truncated and cannot be loaded ({_first_line(error)})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        found = sorted(map(str, checkpoint))[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{where} is not a Lightning checkpoint (no 'state_dict' entry; found {found}); "
                              "Lightning checkpoints are written by Trainer.fit / Trainer.save_checkpoint")
    return checkpoint


def _recorded_model_class(checkpoint: dict[str, Any]) -> str | None:
    record = checkpoint.get(RUN_RECORD_KEY) or {}
    hparams = checkpoint.get("hyper_parameters") or {}
    value = record.get("model_class") or (hparams.get("_class_path") if isinstance(hparams, dict) else None)
    return str(value) if value else None


def resolve_class(class_path: str) -> type | None:
    """The class named by ``class_path``, or ``None`` when it cannot be imported."""
    module, _, name = class_path.rpartition(".")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError:
        return None
    for part in name.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) else None


def _same_class(a: str, b: str) -> bool:
    if a == b:
        return True
    resolved_a, resolved_b = resolve_class(a), resolve_class(b)
    return resolved_a is not None and resolved_a is resolved_b


def check_checkpoint(path: str | Path, *, expected_model_class: str | None = None) -> CheckpointSummary:
    """Check ``path`` is a readable Lightning checkpoint written by ``expected_model_class`` (a class path).

    Raises:
        CheckpointError: naming the file, and both classes when they differ.
    """
    checkpoint = read_checkpoint(path)
    recorded = _recorded_model_class(checkpoint)
    if expected_model_class and recorded and not _same_class(recorded, expected_model_class):
        raise CheckpointError(f"checkpoint {str(path)!r} was written by model {recorded}, but the configured model "
                              f"is {expected_model_class}; pass a checkpoint of {expected_model_class.rpartition('.')[2]}"
                              " or the config that made this one")
    record = checkpoint.get(RUN_RECORD_KEY) or {}
    return CheckpointSummary(
        path=Path(path), model_class=recorded, epoch=checkpoint.get("epoch"), global_step=checkpoint.get("global_step"),
        wandb_run_id=record.get("wandb_run_id"), wandb_project=record.get("wandb_project"),
    )
