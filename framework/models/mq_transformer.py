"""MQ-Transformer (Eisenach et al. 2020): MQ-CNN plus horizon-specific attention over the encoded history,
queried by the horizon's covariates (holiday distances as the positional encoding).

Shares data, loss and metrics with the other forecasters (``framework.models.components.forecasting.lit_base``).

Config example::

    model:
      class_path: framework.models.mq_transformer.MQTransformerForecaster
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
from framework.models.components.forecasting.networks import MQTransformer

__all__ = ["MQTransformerForecaster"]


class MQTransformerForecaster(QuantileForecasterModule):
    """MQTransformer forecaster; ``forward(target_past, features, peak, fork_positions=None)`` -> ``ForecastOutput``.

    Args:
        d_model, num_heads: attention width and heads.
        **kwargs: the options shared by the forecasters (``num_features``, ``context_length``, ``horizon``,
            ``quantiles``, encoder and decoder sizes, ``num_forking``, optimizer and scheduler): see
            :class:`~framework.models.components.forecasting.lit_base.QuantileForecasterModule`.
    """

    def __init__(self, *, d_model: int = 32, num_heads: int = 4, **kwargs) -> None:
        super().__init__(network_class=MQTransformer, network_options={"d_model": d_model, "num_heads": num_heads}, **kwargs)
