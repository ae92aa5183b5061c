"""The CLI's Rich progress bar, whose epoch counter makes sense for runs bounded by ``max_steps`` only."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar

__all__ = ["StepAwareRichProgressBar"]


class StepAwareRichProgressBar(RichProgressBar):
    """``RichProgressBar`` showing ``Epoch 3/9`` for epoch-bounded runs and ``Epoch 3 (max_steps 500)`` for runs
    bounded by steps alone (Lightning's own bar prints ``Epoch 3/-2`` there: ``max_epochs`` is -1)."""

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch}"
        max_steps = self.trainer.max_steps
        if max_steps is not None and max_steps >= 0:
            description += f" (max_steps {max_steps})"
        if len(self.validation_description) > len(description):
            description = f"{description:{len(self.validation_description)}}"
        return description
