"""Fully connected network of the PINN studies."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "MLP"]

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "sin": None}


class _Sine(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(x)


class MLP(nn.Module):
    """``layers = [d_in, h_1, ..., d_out]``; activation after every hidden layer; default PyTorch init.

    ``forward(x [..., d_in]) -> [..., d_out]``.
    """

    def __init__(self, layers: Sequence[int], *, activation: str = "tanh") -> None:
        super().__init__()
        layers = list(layers)
        if len(layers) < 2 or any(not isinstance(w, int) or w < 1 for w in layers):
            raise ValueError(f"layers must be a list of >= 2 positive integers, got {layers!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        modules: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(layers[:-1], layers[1:])):
            modules.append(nn.Linear(fan_in, fan_out))
            if i < len(layers) - 2:
                modules.append(_Sine() if activation == "sin" else ACTIVATIONS[activation]())
        self.net = nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
