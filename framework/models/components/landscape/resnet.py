"""CIFAR-style ResNet family (He et al. 2016, §4.2) with the residual connections and batch norm switchable.

Depth 6n + 2: a 3×3 stem with ``width`` channels, three stages of ``n`` basic blocks with ``width``, ``2·width``,
``4·width`` channels (stride 2 at the start of stages 2 and 3), global average pooling and a linear classifier.
``residual=False`` removes the identity / projection shortcut of every block (the "no skip" nets of Li et al. 2018 and
of the LossLens ResNet-20 study); ``batch_norm=False`` removes every BatchNorm (PyHessian's ablation). Shortcuts that
change shape use a 1×1 convolution with batch norm (option B).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["BasicBlock", "ResNetFamily"]


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class BasicBlock(nn.Module):
    """Two 3×3 convolutions; ``forward(x [B, C_in, H, W]) -> [B, C_out, H/stride, W/stride]``."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, residual: bool, batch_norm: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=not batch_norm)
        self.norm1 = _norm(out_channels, batch_norm)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=not batch_norm)
        self.norm2 = _norm(out_channels, batch_norm)
        self.relu = nn.ReLU()
        self.residual = residual
        self.shortcut: nn.Module = nn.Identity()
        if residual and (stride != 1 or in_channels != out_channels):
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=not batch_norm),
                _norm(out_channels, batch_norm),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return self.relu(out)


class ResNetFamily(nn.Module):
    """ResNet-(6n+2); ``forward(images [B, in_channels, H, W]) -> logits [B, num_classes]``.

    Args:
        in_channels: image channels.
        num_classes: output classes.
        width: channels of the first stage (16 for ResNet-20).
        blocks_per_stage: n (3 for ResNet-20, 9 for ResNet-56).
        residual: keep the shortcut connections.
        batch_norm: keep batch normalisation.
    """

    def __init__(self, *, in_channels: int, num_classes: int, width: int = 16, blocks_per_stage: int = 3,
                 residual: bool = True, batch_norm: bool = True) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("width", width),
                            ("blocks_per_stage", blocks_per_stage)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=not batch_norm),
                                  _norm(width, batch_norm), nn.ReLU())
        stages = []
        channels = width
        for stage, multiplier in enumerate((1, 2, 4)):
            out_channels = width * multiplier
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                stages.append(BasicBlock(channels, out_channels, stride=stride, residual=residual,
                                         batch_norm=batch_norm))
                channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        self.depth = 6 * blocks_per_stage + 2

    def forward(self, images: Tensor) -> Tensor:
        features = self.pool(self.stages(self.stem(images))).flatten(1)
        return self.classifier(features)
