"""Checkpoints: a ``last.ckpt`` that is always the latest state, and a check of ``--ckpt_path`` before anything runs."""

from framework.checkpoints.inspection import (
    CheckpointError,
    CheckpointSummary,
    check_checkpoint,
    is_checkpoint_alias,
    read_checkpoint,
)
from framework.checkpoints.last_state import RUN_RECORD_KEY, LastStateCheckpoint

__all__ = [
    "RUN_RECORD_KEY",
    "CheckpointError",
    "CheckpointSummary",
    "LastStateCheckpoint",
    "check_checkpoint",
    "is_checkpoint_alias",
    "read_checkpoint",
]
