"""MQ-CNN (Wen et al. 2017) with GluonTS's defaults: dilated causal CNN encoder, forking MLP decoder,
non-crossing quantiles.

Shares data, loss and metrics with the other forecasters (``models.components.forecasting.lit_base``).

Config example::

    model:
      class_path: models.mq_cnn.MQCNNForecaster
      init_args:
        num_forking: 56
        optimizer: {class_path: torch.optim.Adam, init_args: {lr: 0.001}}
    data:
      class_path: datamodules.retail_demand.RetailDemand

(``num_features``, ``context_length`` and ``horizon`` are linked from the DataModule.)
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from models.components.forecasting.lit_base import QuantileForecasterModule
from models.components.forecasting.networks import DEFAULT_QUANTILES, MQCNN

__all__ = ["MQCNNForecaster"]


class MQCNNForecaster(QuantileForecasterModule):
    """MQCNN forecaster; ``forward(target_past, features, peak, fork_positions=None)`` -> ``ForecastOutput``.

    Args:
        num_features: known covariates per day (linked from the DataModule).
        context_length: L days of history; horizon: H forecast days (linked).
        quantiles: output levels (must contain 0.5 and 0.9 for the metrics).
        channels, kernel_sizes, dilations: causal CNN encoder (GluonTS: [30,30,30], [7,3,3], [1,3,9]).
        decoder_dim: forking decoder width (30). scale_window: days of the causal trailing-mean scale.
        hidden_history_features: covariate indices hidden from the encoder's history (ablation; default none).
        num_forking: training forks per window (the last ``num_forking`` encoder positions).
        optimizer, scheduler, scheduler_interval, scheduler_monitor: see ``FrameworkModule``.
    """

    def __init__(self, *, num_features: int = 9, context_length: int = 112, horizon: int = 28,
                 quantiles: Sequence[float] = DEFAULT_QUANTILES, channels: Sequence[int] = (30, 30, 30),
                 kernel_sizes: Sequence[int] = (7, 3, 3), dilations: Sequence[int] = (1, 3, 9),
                 decoder_dim: int = 30, scale_window: int = 28, hidden_history_features: Sequence[int] = (),
                 num_forking: int = 56, optimizer: OptimizerCallable | None = None,
                 scheduler: LRSchedulerCallable | None = None, scheduler_interval: str = "epoch",
                 scheduler_monitor: str | None = None) -> None:
        network = MQCNN(num_features=num_features, horizon=horizon, quantiles=list(quantiles),
                        channels=list(channels), kernel_sizes=list(kernel_sizes), dilations=list(dilations),
                        decoder_dim=decoder_dim, scale_window=scale_window,
                        hidden_history_features=list(hidden_history_features))
        super().__init__(network=network, context_length=context_length, horizon=horizon, num_forking=num_forking,
                         optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval,
                         scheduler_monitor=scheduler_monitor)
        self.save_hyperparameters()
