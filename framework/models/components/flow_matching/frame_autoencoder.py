"""Convolutional frame autoencoder: ``[B, C, H, W] -> [B, c, H/2^L, W/2^L] -> [B, C, H, W]``.

The public model's layout: a 3×3 conv stem, ``L`` residual blocks each followed by a stride-2 downsampling conv
(channel multipliers ``channel_mults``), a middle of residual block → single-head self-attention → residual block,
GroupNorm + SiLU and a 3×3 conv to ``latent_channels``. The decoder mirrors it with nearest-neighbour upsampling.
The public code downsamples 8× (L = 3); ``len(channel_mults) - 1`` sets L here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FrameAutoencoderNetwork"]


def _norm(channels: int) -> nn.GroupNorm:
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class _Residual(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
                                  _norm(c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class _SelfAttention(nn.Module):
    """Single-head self-attention over the H·W positions, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


def _middle(channels: int) -> nn.Sequential:
    return nn.Sequential(_Residual(channels, channels), _SelfAttention(channels), _Residual(channels, channels))


class FrameAutoencoderNetwork(nn.Module):
    """Encoder/decoder pair; :meth:`encode` and :meth:`decode` work frame by frame.

    Args:
        in_channels: C, channels of a frame.
        latent_channels: c, channels of a latent.
        base_channels: width of the stem.
        channel_mults: width multipliers per level; ``len - 1`` stride-2 downsamplings (``[1, 2, 4, 4]``: 8×).
        decoder_base_channels: width of the decoder (default ``base_channels``; the public code uses 2×).
    """

    def __init__(self, *, in_channels: int, latent_channels: int = 4, base_channels: int = 32,
                 channel_mults: tuple[int, ...] | list[int] = (1, 2, 2), decoder_base_channels: int | None = None) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("latent_channels", latent_channels),
                            ("base_channels", base_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        mults = [int(m) for m in channel_mults]
        if not mults or any(m < 1 for m in mults):
            raise ValueError(f"channel_mults must be a non-empty list of positive integers, got {channel_mults!r}")
        self.in_channels, self.latent_channels = in_channels, latent_channels
        self.levels = len(mults) - 1
        widths = [base_channels * m for m in mults]
        enc: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        for i in range(self.levels):
            enc += [_Residual(widths[i], widths[i + 1]), nn.Conv2d(widths[i + 1], widths[i + 1], 3, stride=2, padding=1)]
        enc += [_middle(widths[-1]), _norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)

        dec_widths = [(decoder_base_channels or base_channels) * m for m in mults]
        dec: list[nn.Module] = [nn.Conv2d(latent_channels, dec_widths[-1], 3, padding=1), _middle(dec_widths[-1])]
        for i in reversed(range(self.levels)):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(dec_widths[i + 1], dec_widths[i + 1], 3, padding=1),
                    _Residual(dec_widths[i + 1], dec_widths[i])]
        dec += [_norm(dec_widths[0]), nn.SiLU(), nn.Conv2d(dec_widths[0], in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    @property
    def downsampling(self) -> int:
        """Spatial reduction factor ``2^L``."""
        return 2**self.levels

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(c, H/2^L, W/2^L)``; raises if H or W is not divisible by ``2^L``."""
        f = self.downsampling
        if height % f or width % f:
            raise ValueError(f"frame size {height}x{width} must be divisible by the autoencoder's downsampling {f} "
                             f"(len(channel_mults) - 1 = {self.levels} stride-2 levels)")
        return self.latent_channels, height // f, width // f

    def encode(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, c, h, w]``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"encode expects frames [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        self.latent_shape(x.shape[2], x.shape[3])
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """``[B, c, h, w] -> [B, C, H, W]``."""
        if z.dim() != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"decode expects latents [B, {self.latent_channels}, h, w], got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction ``decode(encode(x))``."""
        return self.decode(self.encode(x))
