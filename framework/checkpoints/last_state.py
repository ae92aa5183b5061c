"""``LastStateCheckpoint``: a ``ModelCheckpoint`` whose ``last.ckpt`` is always the latest training state.

Lightning 2.6's ``ModelCheckpoint`` with both ``monitor`` and ``save_last=True`` rewrites ``last.ckpt`` only when it
also writes a top-k file, i.e. when the monitored metric improved; a run resumed from it silently repeats the epochs
since the best one. This subclass writes ``last.ckpt``

* at the end of every training epoch, after validation and after every other callback's and the model's
  ``on_train_epoch_end`` (checkpoint callbacks run last), whatever ``monitor`` is;
* when training stops between epoch ends (``max_steps`` reached mid-epoch);
* on interruption (Ctrl-C = ``KeyboardInterrupt``, SIGTERM = Lightning's ``SIGTERMException``), mid-epoch;
* after step-based saves (``every_n_train_steps``, ``train_time_interval``) and mid-epoch validations
  (``val_check_interval < 1``) as Lightning does.

Top-k files (``monitor``, ``save_top_k``, ``mode``) are Lightning's. Every checkpoint written while this callback is
attached also records, under :data:`RUN_RECORD_KEY`, the model's class path and the W&B run id / project, so that
``--ckpt_path`` can be checked against the configured model and a resumed run continues the same W&B run.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

__all__ = ["RUN_RECORD_KEY", "LastStateCheckpoint", "class_path_of"]

#: Top-level checkpoint key of the run record: ``{"model_class": str, "wandb_run_id": str, "wandb_project": str}``.
RUN_RECORD_KEY = "framework_run"


def class_path_of(obj: Any) -> str:
    """``module.QualName`` of ``obj``'s class."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


class LastStateCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (all its arguments) with ``save_last=True`` meaning "the latest state", see module doc.

    Args:
        save_last: must be ``True`` (the point of this class; use ``ModelCheckpoint`` for anything else).
        **kwargs: ``lightning.pytorch.callbacks.ModelCheckpoint``'s arguments (dirpath, filename, monitor, mode,
            save_top_k, every_n_epochs, every_n_train_steps, ...).
    """

    def __init__(self, *, save_last: bool = True, **kwargs: Any) -> None:
        if save_last is not True:
            raise ValueError(f"LastStateCheckpoint always keeps last.ckpt (save_last must be true), got "
                             f"save_last={save_last!r}; use lightning.pytorch.callbacks.ModelCheckpoint otherwise")
        super().__init__(save_last=True, **kwargs)
        self._last_written_step: int | None = None  # global step of the latest last.ckpt write

    # ------------------------------------------------------------------ when last.ckpt is written
    @staticmethod
    def _at_epoch_end(trainer) -> bool:
        return bool(getattr(trainer.fit_loop.epoch_loop.batch_progress, "is_last_batch", False))

    @staticmethod
    def _may_write(trainer) -> bool:
        return not trainer.fast_dev_run and trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking

    def _save_last_checkpoint(self, trainer, monitor_candidates, *, force: bool = False) -> None:
        # Lightning's own calls (after a top-k save) are skipped at an epoch's end: on_train_epoch_end below writes
        # last.ckpt once, after everything else of the epoch has run.
        if not force and self._at_epoch_end(trainer):
            return
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_written_step = trainer.global_step

    def _write_last(self, trainer) -> None:
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer), force=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)  # top-k files when saving on train epoch end
        if self._may_write(trainer):
            self._write_last(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._may_write(trainer) and self._last_written_step != trainer.global_step:
            self._write_last(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)  # Lightning's save_on_exception files, if asked for
        interrupted = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        if interrupted and self._may_write(trainer) and self._last_written_step != trainer.global_step:
            self._write_last(trainer)

    # ------------------------------------------------------------------ run record
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        record: dict[str, Any] = {"model_class": class_path_of(pl_module)}
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.version:
                record.update(wandb_run_id=str(logger.version), wandb_project=logger.name)
                break
        checkpoint[RUN_RECORD_KEY] = record
