"""Send a callback's scalars everywhere Lightning users look for them.

* every logger (``logger.log_metrics`` on global rank 0, at ``step``) — valid from any hook;
* ``pl_module.log_dict(..., logger=False)`` from hooks where Lightning allows ``self.log`` (``on_train_epoch_end``,
  ``on_train_start``, ``on_validation_epoch_end``, ...), so the values take part in Lightning's result collection;
* ``trainer.callback_metrics`` directly, from any hook — so ``EarlyStopping`` / ``ModelCheckpoint(monitor=...)`` see
  them and a run with ``logger=False`` loses nothing but the files. (``on_fit_start`` values would be wiped by the
  sanity check's metric reset; callbacks that compute there publish again in ``on_train_start``.)

Values must be equal on every rank: callbacks that compute on rank 0 only broadcast them first
(:func:`broadcast_scalars`), because monitors on the other ranks need the same keys.
"""

from __future__ import annotations

from collections.abc import Mapping

import lightning.pytorch as pl
import torch

__all__ = ["broadcast_scalars", "publish_metrics", "self_log_allowed"]


def self_log_allowed(pl_module: pl.LightningModule) -> bool:
    """Whether the hook being run (``pl_module._current_fx_name``) may call ``self.log`` with ``on_epoch=True``."""
    from lightning.pytorch.trainer.connectors.logger_connector.fx_validator import _FxValidator

    hook = getattr(pl_module, "_current_fx_name", None)
    options = _FxValidator.functions.get(hook) if hook else None
    attached = getattr(pl_module, "_trainer", None) is not None
    return attached and options is not None and True in options["allowed_on_epoch"]


def broadcast_scalars(trainer: pl.Trainer, values: Mapping[str, float] | None) -> dict[str, float]:
    """Rank 0's ``values`` on every rank (a collective: every rank must call it)."""
    if trainer.world_size > 1:
        values = trainer.strategy.broadcast(dict(values) if values is not None else None, src=0)
    return dict(values or {})


def publish_metrics(trainer: pl.Trainer, pl_module: pl.LightningModule, values: Mapping[str, float], *,
                    step: int | None = None, to_loggers: bool = True) -> None:
    """Log ``values`` (name → number) to the loggers, to ``self.log`` where allowed and to ``callback_metrics``."""
    values = {name: float(value) for name, value in values.items()}
    if not values:
        return
    if to_loggers and trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step if step is None else step)
    if self_log_allowed(pl_module):
        pl_module.log_dict(values, logger=False, on_step=False, on_epoch=True, batch_size=1,
                           add_dataloader_idx=False)
    trainer.callback_metrics.update({name: torch.tensor(value) for name, value in values.items()})
