"""Plain ``nn.Module``s of the demand forecasters (docs/spade.md): MQ-CNN, MQ-Transformer, SPADE and their parts."""

from framework.models.components.forecasting.attention import AttentionOutput, MaskedHorizonAttention
from framework.models.components.forecasting.causal_conv import CausalConvEncoder
from framework.models.components.forecasting.decoder import ForkingMLPDecoder
from framework.models.components.forecasting.loss import pinball_loss
from framework.models.components.forecasting.networks import DEFAULT_QUANTILES, MQCNN, SPADE, ForecastOutput, MQTransformer
from framework.models.components.forecasting.quantile_head import IncrementalQuantileHead
from framework.models.components.forecasting.scaling import forward_fill_peaks, rolling_mean_scale

__all__ = ["AttentionOutput", "CausalConvEncoder", "DEFAULT_QUANTILES", "ForecastOutput", "ForkingMLPDecoder",
           "IncrementalQuantileHead", "MQCNN", "MQTransformer", "MaskedHorizonAttention", "SPADE",
           "forward_fill_peaks", "pinball_loss", "rolling_mean_scale"]
