"""LightningModule shared by the MQ-CNN, MQ-Transformer and SPADE forecasters: one loss, one data contract, one set
of metrics, so the three compare on equal terms."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection

from framework.base import FrameworkModule
from framework.metrics.quantile_forecast import QuantileForecastMetrics
from models.components.forecasting.forking import gather_horizon
from models.components.forecasting.loss import pinball_loss
from models.components.forecasting.networks import ForecastOutput

__all__ = ["QuantileForecasterModule"]


class QuantileForecasterModule(FrameworkModule):
    """Trains a forking-sequence quantile forecaster and evaluates it at rolling forecast-creation dates.

    Batches are dicts of :class:`datamodules.retail.windows.ForecastWindows`: ``target [B, L+H]``, ``features``,
    ``peak``, ``post_peak``, ``most_affected``, ``loss_scale``.

    Training: forks at the last ``num_forking`` encoder positions (``L − num_forking .. L − 1``); loss = pinball loss
    (GluonTS's ``2·(q(y−ŷ)⁺ + (1−q)(ŷ−y)⁺)``) averaged over quantiles, horizons and forks, each window divided by its
    ``loss_scale`` (mean |y| + 1 of the context, computed by the DataModule, identical for every model).
    Evaluation: one forecast from the end of the context; ``<stage>/wql50_<subset>``, ``wql90_``, ``bias50_`` for
    subsets all / peak / post_peak / most_affected (``framework.metrics.quantile_forecast``).

    Args:
        network: the ``nn.Module`` forecaster (built by the subclass).
        context_length: L. horizon: H (<= L). num_forking: forks per training window (1..L).
        optimizer, scheduler, scheduler_interval, scheduler_monitor: see ``FrameworkModule``.
    """

    def __init__(self, *, network: nn.Module, context_length: int, horizon: int, num_forking: int,
                 optimizer: OptimizerCallable | None = None, scheduler: LRSchedulerCallable | None = None,
                 scheduler_interval: str = "epoch", scheduler_monitor: str | None = None) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval,
                         scheduler_monitor=scheduler_monitor)
        for name, value in (("context_length", context_length), ("horizon", horizon), ("num_forking", num_forking)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if horizon > context_length:
            raise ValueError(f"horizon={horizon} is longer than the history context_length={context_length}")
        if num_forking > context_length:
            raise ValueError(f"num_forking={num_forking} must be <= context_length={context_length}")
        self.network = network
        self.context_length, self.horizon, self.num_forking = context_length, horizon, num_forking
        self.register_buffer("levels", torch.tensor(network.quantiles), persistent=False)
        self.register_stage_metrics(MetricCollection({"forecast": QuantileForecastMetrics(
            quantiles=network.quantiles)}), stages=("val", "test"))
        self.results: dict[str, dict[str, float]] = {}

    @property
    def quantiles(self) -> list[float]:
        return list(self.network.quantiles)

    def forward(self, target_past: Tensor, features: Tensor, peak: Tensor,
                fork_positions: Tensor | None = None, **kwargs) -> ForecastOutput:
        return self.network(target_past, features, peak, fork_positions, **kwargs)

    def setup(self, stage: str) -> None:
        # num_features is a DataModule property (it depends on the data source), so the CLI cannot link it.
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        expected = getattr(datamodule, "num_features", None)
        if expected is not None and expected != self.network.num_features:
            raise ValueError(f"the model was built for num_features={self.network.num_features} covariates but "
                             f"{type(datamodule).__name__} provides {expected}; set model.init_args.num_features="
                             f"{expected}")

    def _check_batch(self, batch: dict) -> None:
        if not isinstance(batch, dict) or "target" not in batch:
            raise ValueError("forecaster batches are dicts with target, features, peak, post_peak, most_affected, "
                             "loss_scale (datamodules.retail.windows.ForecastWindows)")
        length = batch["target"].shape[1]
        if length != self.context_length + self.horizon:
            raise ValueError(f"windows have {length} days but the model expects context_length + horizon = "
                             f"{self.context_length + self.horizon}; link data and model sizes")

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        self._check_batch(batch)
        L = self.context_length
        forks = torch.arange(L - self.num_forking, L, device=batch["target"].device)
        out = self(batch["target"][:, :L], batch["features"], batch["peak"], forks)
        truth = gather_horizon(batch["target"], forks, self.horizon)                    # [B, F, H]
        loss = pinball_loss(out.quantiles, truth, self.levels).mean(dim=-1)
        loss = (loss / batch["loss_scale"][:, None, None]).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(truth))
        return loss

    def forecast(self, batch: dict) -> Tensor:
        """``[B, H, Q]`` quantiles from the end of each window's context."""
        L = self.context_length
        return self(batch["target"][:, :L], batch["features"], batch["peak"]).quantiles[:, 0]

    def _eval_step(self, batch: dict, stage: str) -> None:
        self._check_batch(batch)
        L = self.context_length
        forecasts = self.forecast(batch)
        truth = batch["target"][:, L:]
        loss = (pinball_loss(forecasts, truth, self.levels).mean(dim=-1) / batch["loss_scale"][:, None]).mean()
        self.log(f"{stage}/loss", loss, batch_size=len(truth))
        self.metrics_for(stage)["forecast"].update(forecasts.detach(), truth, batch["peak"][:, L:],
                                                   batch["post_peak"][:, L:], batch["most_affected"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self.forecast(batch)

    def _eval_epoch_end(self, stage: str) -> None:
        metric = self.metrics_for(stage)["forecast"]
        if not metric.update_count:
            return
        values = {k: v.float() for k, v in metric.compute().items()}
        self.results[stage] = {k: float(v) for k, v in values.items()}
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, prog_bar=False)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")
