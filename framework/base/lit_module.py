"""Shared LightningModule base: injected optimizer / scheduler factories and per-stage metric collections."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor
from torchmetrics import MeanMetric, Metric, MetricCollection

from framework.validation import require_choice

#: Passed by :meth:`FrameworkModule.log_dict` for "no ``sync_dist`` given", so :meth:`FrameworkModule.log` decides.
_SYNC_UNSET = object()


def _in_epoch_end_hook(module: pl.LightningModule) -> bool:
    return (getattr(module, "_current_fx_name", None) or "").endswith("_epoch_end")


__all__ = ["FrameworkModule", "STAGES"]

STAGES = ("train", "val", "test")


class FrameworkModule(pl.LightningModule):
    """Base for the project's LightningModules.

    Models own their optimizers: the optimizer and scheduler are *factories* injected through the constructor
    (``OptimizerCallable`` / ``LRSchedulerCallable``), so any ``torch.optim.Optimizer`` - the project's own included -
    is chosen in YAML by ``class_path``::

        model:
          class_path: framework.models.x.X
          init_args:
            optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 1.0e-3}}
            scheduler: {class_path: torch.optim.lr_scheduler.CosineAnnealingLR, init_args: {T_max: 100}}

    Subclasses call ``super().__init__(optimizer=..., scheduler=...)``, then ``self.save_hyperparameters()``,
    override :meth:`parameter_groups` to give parameter groups their own settings, and register metrics with
    :meth:`register_stage_metrics` (one independent copy per stage, so train / val / test never share state).

    Args:
        optimizer: factory ``params -> Optimizer``; required for ``fit``.
        scheduler: optional factory ``optimizer -> LRScheduler``.
        scheduler_interval: "epoch" or "step".
        scheduler_monitor: metric watched by ``ReduceLROnPlateau``-style schedulers.
    """

    def __init__(
        self,
        *,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str | None = None,
    ) -> None:
        super().__init__()
        require_choice("scheduler_interval", scheduler_interval, ("epoch", "step"))
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_monitor = scheduler_monitor
        self.stage_metrics = torch.nn.ModuleDict()

    # ------------------------------------------------------------------ metrics
    def register_stage_metrics(self, metrics: MetricCollection, stages: Iterable[str] = STAGES) -> None:
        """Keep one clone of ``metrics`` per stage, keys prefixed ``"<stage>/"``."""
        for stage in stages:
            require_choice("stage", stage, STAGES)
            # ModuleDict keys may not shadow nn.Module attributes ("train" would), hence the suffix.
            self.stage_metrics[f"{stage}_metrics"] = metrics.clone(prefix=f"{stage}/")

    def metrics_for(self, stage: str) -> MetricCollection:
        """The metric collection of ``stage`` ("train", "val" or "test")."""
        key = f"{stage}_metrics"
        if key not in self.stage_metrics:
            registered = [k.removesuffix("_metrics") for k in self.stage_metrics]
            raise KeyError(f"no metrics registered for stage {stage!r}; registered: {registered}")
        return self.stage_metrics[key]

    # ------------------------------------------------------------------ logging
    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """``LightningModule.log``; under DDP, epoch-level values are reduced over all ranks unless ``sync_dist`` is
        given.

        Epoch-level means values logged while validating / testing and values logged in an epoch-end hook
        (``on_train_epoch_end`` ...), where Lightning defaults to ``on_epoch=True``. A value logged with
        ``batch_size`` goes through a ``torchmetrics.MeanMetric`` (weighted by the batch size, summed over ranks), so
        a loss logged as a plain tensor reports the same number on N processes as on one, not rank 0's shard.
        (Lightning's own ``sync_dist`` mean divides integer batch-size totals by the world size with floor division,
        which is off when the total is odd; it is the fallback when no ``batch_size`` is given.) Step-level values
        are left alone: ranks may run different numbers of evaluation batches, and a per-step collective would hang.
        """
        if kwargs.get("sync_dist", None) is _SYNC_UNSET:
            del kwargs["sync_dist"]
        trainer = self._trainer
        epoch_level = trainer is not None and (not trainer.training or _in_epoch_end_hook(self))
        if (trainer is not None and trainer.world_size > 1 and epoch_level and "sync_dist" not in kwargs
                and kwargs.get("on_step") is not True and not isinstance(value, Metric)):
            batch_size = kwargs.get("batch_size")
            if batch_size is not None and isinstance(value, (Tensor, float, int)):
                value = self._synced_mean(name, value, batch_size)
                kwargs["metric_attribute"] = f"_eval_means.{self._mean_key(name)}"
            else:
                kwargs["sync_dist"] = True
        super().log(name, value, *args, **kwargs)

    def log_dict(self, dictionary: Any, *args: Any, sync_dist: bool | None = None, **kwargs: Any) -> None:
        """``LightningModule.log_dict`` whose values get :meth:`log`'s DDP reduction unless ``sync_dist`` is given
        (Lightning's ``log_dict`` always passes ``sync_dist=False`` on, which would turn it off)."""
        super().log_dict(dictionary, *args, sync_dist=_SYNC_UNSET if sync_dist is None else sync_dist, **kwargs)

    @staticmethod
    def _mean_key(name: str) -> str:
        return name.replace(".", "_").replace("/", "__")

    def _synced_mean(self, name: str, value: Tensor | float, batch_size: int) -> MeanMetric:
        key = self._mean_key(name)
        if not hasattr(self, "_eval_means"):
            self._eval_means = torch.nn.ModuleDict()  # metric states are not persistent: checkpoints unchanged
        if key not in self._eval_means:
            self._eval_means[key] = MeanMetric().to(self.device)
        metric = self._eval_means[key]
        value = torch.as_tensor(value, dtype=torch.float64, device=self.device).detach()
        metric.update(value.mean(), weight=batch_size)
        return metric

    # ------------------------------------------------------------------ optimizers
    def parameter_groups(self) -> Iterable[torch.nn.Parameter] | list[dict[str, Any]]:
        """Parameters (or parameter groups) handed to the optimizer factory. Override for per-group settings."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise MisconfigurationException(
                f"{type(self).__name__} has no optimizer: set model.init_args.optimizer "
                "(e.g. {class_path: torch.optim.AdamW, init_args: {lr: 0.001}}) to train it"
            )
        optimizer = self.optimizer_factory(self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": self.scheduler_interval}
        if self.scheduler_monitor is not None:
            config["monitor"] = self.scheduler_monitor
        return {"optimizer": optimizer, "lr_scheduler": config}
