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
from framework.models.components.forecasting.forking import gather_horizon
from framework.models.components.forecasting.loss import pinball_loss
from framework.models.components.forecasting.networks import DEFAULT_QUANTILES, ForecastOutput

__all__ = ["QuantileForecasterModule"]


class QuantileForecasterModule(FrameworkModule):
    """Trains a forking-sequence quantile forecaster and evaluates it at rolling forecast-creation dates.

    Batches are dicts of :class:`framework.datamodules.retail.windows.ForecastWindows`: ``target [B, L+H]``, ``features``,
    ``peak``, ``post_peak``, ``most_affected``, ``loss_scale``.

    Training: forks at the last ``num_forking`` encoder positions (``L − num_forking .. L − 1``); loss = pinball loss
    (GluonTS's ``2·(q(y−ŷ)⁺ + (1−q)(ŷ−y)⁺)``) averaged over quantiles, horizons and forks, each window divided by its
    ``loss_scale`` (mean |y| + 1 of the context, computed by the DataModule, identical for every model).
    Evaluation: one forecast from the end of the context; ``<stage>/wql50_<subset>``, ``wql90_``, ``bias50_`` for
    subsets all / peak / post_peak / most_affected (``framework.metrics.quantile_forecast``).

    Subclasses declare only their own options and pass the rest through ``**kwargs`` (LightningCLI follows
    ``**kwargs`` into this signature, so every option below is a ``model.init_args`` key of each forecaster).

    Args:
        network_class: the ``nn.Module`` forecaster class (given by the subclass, not a config option).
        network_options: the subclass's own options for ``network_class``.
        num_features: known covariates per day (linked from the DataModule).
        context_length: L days of history. horizon: H forecast days (<= L; linked from the DataModule).
        quantiles: output levels (must contain 0.5 and 0.9 for the metrics).
        channels, kernel_sizes, dilations: causal CNN encoder (GluonTS: [30,30,30], [7,3,3], [1,3,9]).
        decoder_dim: forking decoder width (30). scale_window: days of the causal trailing-mean scale.
        num_forking: training forks per window (the last ``num_forking`` encoder positions, 1..L).
        optimizer, scheduler, scheduler_interval, scheduler_monitor: see ``FrameworkModule``.
    """

    def __init__(self, *, network_class: type[nn.Module], network_options: dict | None = None,
                 num_features: int = 9, context_length: int = 112, horizon: int = 28,
                 quantiles: Sequence[float] = DEFAULT_QUANTILES, channels: Sequence[int] = (30, 30, 30),
                 kernel_sizes: Sequence[int] = (7, 3, 3), dilations: Sequence[int] = (1, 3, 9),
                 decoder_dim: int = 30, scale_window: int = 28, num_forking: int = 56,
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
        network = network_class(num_features=num_features, horizon=horizon, quantiles=list(quantiles),
                                channels=list(channels), kernel_sizes=list(kernel_sizes), dilations=list(dilations),
                                decoder_dim=decoder_dim, scale_window=scale_window, **(network_options or {}))
        # Collects this signature and the subclass's own options (Lightning walks the chain of __init__ frames).
        self.save_hyperparameters(ignore=["network_class", "network_options"])
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
                             "loss_scale (framework.datamodules.retail.windows.ForecastWindows)")
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
