"""Plain image classifiers used as ensemble members: a small CNN and an MLP with width / depth knobs."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from framework.validation import require_in_range

__all__ = ["SmallCNN", "SmallMLP"]


def _require_count(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class SmallCNN(nn.Module):
    """``depth`` blocks of 3x3 conv (+ optional BatchNorm) + ReLU + 2x2 max-pool, global average pool, linear head.

    Block ``i`` has ``width * 2**i`` channels (capped at ``8 * width``); pooling is skipped once the feature map is
    1 pixel wide, so any depth works on small (8x8) images.

    Shapes: ``[B, in_channels, H, W] -> [B, num_classes]`` logits.

    Args:
        in_channels: image channels. num_classes: output classes. width: channels of the first block.
        depth: number of conv blocks. batch_norm: BatchNorm after each conv. dropout: before the head.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 16,
        depth: int = 2,
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _require_count("in_channels", in_channels)
        _require_count("num_classes", num_classes, 2)
        _require_count("width", width)
        _require_count("depth", depth)
        require_in_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        layers = []
        channels = in_channels
        for i in range(depth):
            out = width * 2 ** min(i, 3)
            block = [nn.Conv2d(channels, out, 3, padding=1, bias=not batch_norm)]
            if batch_norm:
                block.append(nn.BatchNorm2d(out))
            layers.append(nn.Sequential(*block))
            channels = out
        self.blocks = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)
        self.in_channels = in_channels
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = F.relu(block(x))
            if x.shape[-1] >= 2 and x.shape[-2] >= 2:
                x = F.max_pool2d(x, 2)
        return self.head(self.dropout(x.mean(dim=(-2, -1))))


class SmallMLP(nn.Module):
    """Flatten, ``depth`` hidden layers of ``width`` units with ReLU, linear head.

    Shapes: ``[B, *input_shape] -> [B, num_classes]`` logits, with ``prod(input_shape) == in_features``.

    Args:
        in_features: flattened input size. num_classes: output classes. width: hidden units.
        depth: hidden layers (>= 1). dropout: after each hidden layer.
    """

    def __init__(self, *, in_features: int = 64, num_classes: int = 10, width: int = 128, depth: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        _require_count("in_features", in_features)
        _require_count("num_classes", num_classes, 2)
        _require_count("width", width)
        _require_count("depth", depth)
        require_in_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        layers: list[nn.Module] = []
        size = in_features
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            size = width
        layers.append(nn.Linear(size, num_classes))
        self.net = nn.Sequential(*layers)
        self.in_features = in_features
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        if x[0].numel() != self.in_features:
            raise ValueError(f"SmallMLP expects inputs with {self.in_features} features, got shape {list(x.shape)}")
        return self.net(x.flatten(1))


