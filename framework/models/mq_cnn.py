"""MQ-CNN (Wen et al. 2017) with GluonTS's defaults: dilated causal CNN encoder, forking MLP decoder,
non-crossing quantiles.

Shares data, loss and metrics with the other forecasters (``framework.models.components.forecasting.lit_base``).

Config example::

    model:
      class_path: framework.models.mq_cnn.MQCNNForecaster
      init_args:
        num_forking: 56
        optimizer: {class_path: torch.optim.Adam, init_args: {lr: 0.001}}
    data:
      class_path: framework.datamodules.retail_demand.RetailDemand

(``num_features``, ``context_length`` and ``horizon`` are linked from the DataModule.)
"""

from __future__ import annotations

from collections.abc import Sequence

from framework.models.components.forecasting.lit_base import QuantileForecasterModule
from framework.models.components.forecasting.networks import MQCNN

__all__ = ["MQCNNForecaster"]


class MQCNNForecaster(QuantileForecasterModule):
    """MQCNN forecaster; ``forward(target_past, features, peak, fork_positions=None)`` -> ``ForecastOutput``.

    Args:
        hidden_history_features: covariate indices hidden from the encoder's history (ablation; default none).
        **kwargs: the options shared by the forecasters (``num_features``, ``context_length``, ``horizon``,
            ``quantiles``, encoder and decoder sizes, ``num_forking``, optimizer and scheduler): see
            :class:`~framework.models.components.forecasting.lit_base.QuantileForecasterModule`.
    """

    def __init__(self, *, hidden_history_features: Sequence[int] = (), **kwargs) -> None:
        super().__init__(network_class=MQCNN, network_options={"hidden_history_features": list(hidden_history_features)}, **kwargs)
