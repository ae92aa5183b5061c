"""MQ-CNN's encoder: a stack of dilated causal 1-d convolutions (GluonTS ``HierarchicalCausalConv1DEncoder``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CausalConvEncoder"]


class CausalConvEncoder(nn.Module):
    """Dilated causal convolutions with ReLU; with ``use_residual`` the raw target is concatenated to the output.

    GluonTS defaults: channels [30, 30, 30], kernel sizes [7, 3, 3], dilations [1, 3, 9] (the docstring's [1, 3, 5]
    is not what the code uses), ``use_residual=True`` (encoder width 31).

    Args:
        in_features: inputs per step (target first).
        channels, kernel_sizes, dilations: one entry per layer.
        use_residual: append the input's first column (the target) to the output.
    """

    def __init__(self, *, in_features: int, channels: Sequence[int] = (30, 30, 30),
                 kernel_sizes: Sequence[int] = (7, 3, 3), dilations: Sequence[int] = (1, 3, 9),
                 use_residual: bool = True) -> None:
        super().__init__()
        if not (len(channels) == len(kernel_sizes) == len(dilations)) or not channels:
            raise ValueError(f"channels, kernel_sizes and dilations need one entry per layer, got {list(channels)}, "
                             f"{list(kernel_sizes)}, {list(dilations)}")
        for name, seq in (("channels", channels), ("kernel_sizes", kernel_sizes), ("dilations", dilations)):
            if any(not isinstance(v, int) or v < 1 for v in seq):
                raise ValueError(f"{name} must be positive integers, got {list(seq)}")
        self.pads = [(k - 1) * d for k, d in zip(kernel_sizes, dilations)]
        widths = [in_features, *channels]
        self.convs = nn.ModuleList(
            nn.Conv1d(widths[i], widths[i + 1], kernel_sizes[i], dilation=dilations[i]) for i in range(len(channels)))
        self.use_residual = use_residual
        self.out_features = channels[-1] + (1 if use_residual else 0)

    @property
    def receptive_field(self) -> int:
        return 1 + sum(self.pads)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, L, in_features]`` -> ``[B, L, out_features]``; output τ depends on inputs <= τ only."""
        h = x.transpose(1, 2)
        for conv, pad in zip(self.convs, self.pads):
            h = torch.relu(conv(F.pad(h, (pad, 0))))
        h = h.transpose(1, 2)
        return torch.cat([h, x[..., :1]], dim=-1) if self.use_residual else h
