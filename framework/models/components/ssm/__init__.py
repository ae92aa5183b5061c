"""Diagonal state space models with tunable frequency bias (S4D, Sobolev filter, frequency-response probes)."""

from framework.models.components.ssm.blocks import DeepSSM, SSMBlock
from framework.models.components.ssm.cosine_warmup import CosineWarmupLR
from framework.models.components.ssm.filter_protocol import (
    FilterableConvolution,
    SpectralFilter,
    filterable_layers,
    frequency_product,
)
from framework.models.components.ssm.frequency_response import (
    FrequencyResponse,
    kernel_frequency_response,
    layer_frequency_response,
    per_frequency_error,
)
from framework.models.components.ssm.s4d_kernel import S4DKernel
from framework.models.components.ssm.s4d_layer import S4D
from framework.models.components.ssm.sobolev import SobolevSpectralFilter, sobolev_weights

__all__ = [
    "CosineWarmupLR",
    "DeepSSM",
    "FilterableConvolution",
    "FrequencyResponse",
    "S4D",
    "S4DKernel",
    "SSMBlock",
    "SobolevSpectralFilter",
    "SpectralFilter",
    "filterable_layers",
    "frequency_product",
    "kernel_frequency_response",
    "layer_frequency_response",
    "per_frequency_error",
    "sobolev_weights",
]
