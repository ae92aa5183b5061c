"""Stop a fit at the last epoch boundary that fits a wall-clock budget and write a resumable checkpoint there.

For training in short slots (a GPU lent for 10 minutes at a time): each slot runs ``fit`` with this callback and
``--ckpt_path`` of the previous slot's checkpoint; the chunks together equal one uninterrupted run (tested in
``tests/framework/callbacks/test_chunked_resume.py``) when the model's randomness comes from the global RNGs and
:class:`~framework.callbacks.rng_state.RNGStateCheckpoint` is attached too.

Why epoch boundaries and not Lightning's ``--trainer.max_time``: ``max_time`` stops after any batch, and a plain
``torch.utils.data.DataLoader`` cannot resume in the middle of an epoch — Lightning restarts the epoch's iterator
and warns "resuming from a checkpoint that ended before the epoch ended". At an epoch boundary nothing of the
loader's position needs saving: the next epoch's order depends only on ``(seed, epoch)``. Keep ``--trainer.max_time``
a little above ``seconds`` as a hard stop if an epoch runs unexpectedly long.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import lightning.pytorch as pl

__all__ = ["EpochBoundaryTimeLimit"]

log = logging.getLogger(__name__)


class EpochBoundaryTimeLimit(pl.Callback):
    """Ends training at an epoch end when the next epoch would not fit into ``seconds``; writes ``checkpoint_path``.

    The next epoch is predicted to take as long as the longest epoch so far times ``safety``. The checkpoint is
    also written when training ends for any other reason (``max_steps``, ``max_epochs``), so the last slot leaves
    the final state in the same file. Written atomically (a temporary file renamed into place).

    Args:
        seconds: wall-clock budget of this process's training, counted from ``on_train_start`` (> 0). Leave room in
            the slot for start-up, data loading and any evaluation after ``fit``.
        checkpoint_path: file the resumable checkpoint is written to (its folder is created).
        safety: factor on the longest epoch when predicting the next one (>= 1).
    """

    def __init__(self, *, seconds: float, checkpoint_path: str, safety: float = 1.1) -> None:
        super().__init__()
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ValueError(f"seconds must be a positive number (the slot's training budget), got {seconds!r}")
        if not isinstance(checkpoint_path, (str, os.PathLike)) or not str(checkpoint_path):
            raise ValueError(f"checkpoint_path must be a file path, got {checkpoint_path!r}")
        if isinstance(safety, bool) or not isinstance(safety, (int, float)) or safety < 1:
            raise ValueError(f"safety must be a number >= 1, got {safety!r}")
        self.seconds, self.checkpoint_path, self.safety = float(seconds), Path(checkpoint_path), float(safety)
        self._train_start: float | None = None
        self._epoch_start: float | None = None
        self._longest_epoch = 0.0
        self._writing = False
        #: ``True`` once this callback ended the fit early (the run needs another slot).
        self.stopped_early = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_start = time.monotonic()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.monotonic()
        if self._epoch_start is not None:
            self._longest_epoch = max(self._longest_epoch, now - self._epoch_start)
        elapsed = now - (self._train_start if self._train_start is not None else now)
        if trainer.should_stop or self._finishing(trainer):
            return
        if elapsed + self.safety * self._longest_epoch > self.seconds:
            # Saved in on_train_end, once the loop has closed the epoch: a checkpoint written here, inside
            # on_train_epoch_end, resumes into Lightning's "restarted on epoch end" stage, which counts the epoch twice
            # and shuffles the next one with the wrong epoch's seed (Lightning 2.6).
            self.stopped_early = True
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        at_epoch_end = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if not at_epoch_end and not self._finishing(trainer):
            log.warning("training stopped in the middle of an epoch (max_time, a signal?): %s holds that state, but "
                        "resuming from it repeats the epoch's first batches (not exact)", self.checkpoint_path)
        self.save(trainer, epoch_boundary=at_epoch_end)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if self._writing:
            _as_next_epoch_start(checkpoint)

    @staticmethod
    def _finishing(trainer: pl.Trainer) -> bool:
        """The epoch that just ended is the last one anyway."""
        max_steps, max_epochs = trainer.max_steps, trainer.max_epochs
        if max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps:
            return True
        return max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs

    def save(self, trainer: pl.Trainer, *, epoch_boundary: bool = True) -> None:
        """Write the checkpoint atomically (every rank takes part in ``save_checkpoint``; rank 0 renames);
        ``epoch_boundary``: rewrite its loop state as the start of the next epoch (see ``_as_next_epoch_start``)."""
        tmp = self.checkpoint_path.with_name(self.checkpoint_path.name + ".tmp")
        if trainer.is_global_zero:
            self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        self._writing = epoch_boundary
        try:
            trainer.save_checkpoint(tmp)
        finally:
            self._writing = False
        if trainer.is_global_zero:
            os.replace(tmp, self.checkpoint_path)
        trainer.strategy.barrier("epoch_time_limit_saved")


def _zero(progress: dict) -> None:
    for key in progress:
        progress[key] = 0


def _as_next_epoch_start(checkpoint: dict) -> None:
    """Rewrite the loop state of a checkpoint taken after a finished epoch as "before the next epoch's first batch".

    Lightning 2.6 resumes an iteration-based fit (``max_steps``) from a checkpoint whose epoch loop still holds the
    finished epoch's batch counters by running an empty epoch first: the run then counts one epoch too many and
    shuffles with the wrong epoch's seed. Zeroing the per-epoch ("current") counters makes the resumed run start
    the next epoch exactly as the uninterrupted run does. ``_batches_that_stepped`` (the logger's step) is lowered by
    one because Lightning adds one on every restart (it expects checkpoints from inside ``on_train_batch_end``).
    Tested against an uninterrupted run in ``tests/framework/callbacks/test_chunked_resume.py``.
    """
    fit = checkpoint["loops"]["fit_loop"]
    for key in ("epoch_loop.batch_progress", "epoch_loop.val_loop.batch_progress"):
        _zero(fit[key]["current"])
        fit[key]["is_last_batch"] = False
    # Lightning clears the validation loop's running total at every epoch start, except on a restart.
    _zero(fit["epoch_loop.val_loop.batch_progress"]["total"])
    _zero(fit["epoch_loop.scheduler_progress"]["current"])
    for progress in fit["epoch_loop.automatic_optimization.optim_progress"]["optimizer"].values():
        _zero(progress["current"])
    fit["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1
