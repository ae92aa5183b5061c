"""The vector-field network: a small U-ViT over state tokens, conditioned RIVER-style (Davtyan et al. 2023).

Inputs are the point on the path ``x_t``, the reference state ``z_ref`` (the latest frame) and a conditioning state
``z_cond`` (a random earlier frame), each ``[B, C, H, W]``; the index distance ``d = ref − cond >= 1`` and the time
``t ∈ [0, 1]``. The three states are concatenated along channels, cut into ``patch × patch`` tokens and linearly
projected to ``d_model``; a learned 2-D position embedding and an embedding of ``log d`` are added; a time token
(sinusoidal embedding of ``t · time_scale``, then an MLP) is prepended. Pre-norm transformer blocks in a U shape
(``in_blocks`` down, ``mid_blocks``, ``in_blocks`` up, each up block after a skip concatenation and a
linear fuse), then a linear
head back to patches and a 3×3 convolution on the assembled field.

The public model (d_model 512, 4/5/4 blocks, 8 heads, patch 1 on latents) is ``VectorFieldNetwork(d_model=512,
in_blocks=4, mid_blocks=5, num_heads=8, patch_size=1)``; the defaults here are small enough for a CPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from framework.validation import require_non_negative

__all__ = ["VectorFieldNetwork", "sinusoidal_embedding"]


def sinusoidal_embedding(values: Tensor, dim: int) -> Tensor:
    """``[B] -> [B, dim]`` sin/cos features at geometric frequencies 1 .. 1e-4 (``dim`` even)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=values.device, dtype=torch.float32) / half)
    angles = values.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class VectorFieldNetwork(nn.Module):
    """``forward(x_t, t, z_ref, z_cond, distance) -> v [B, C, H, W]``.

    Args:
        channels: C, channels of one state.
        height, width: H, W of one state (must be divisible by the patch size).
        patch_size: token patch (int or ``(ph, pw)``).
        d_model: token width; num_heads: attention heads; mlp_ratio: FFN width / d_model.
        in_blocks: blocks on each side of the U; mid_blocks: blocks in the middle.
        dropout: dropout in the transformer blocks.
        time_scale: multiplier of t inside the sinusoidal embedding (200 in the public code).
    """

    def __init__(self, *, channels: int, height: int, width: int, patch_size: int | tuple[int, int] = 1,
                 d_model: int = 64, num_heads: int = 4, mlp_ratio: float = 4.0, in_blocks: int = 1,
                 mid_blocks: int = 1, dropout: float = 0.0, time_scale: float = 200.0) -> None:
        super().__init__()
        ph, pw = _pair(patch_size)
        for name, value in (("channels", channels), ("height", height), ("width", width), ("patch height", ph),
                            ("patch width", pw), ("d_model", d_model), ("num_heads", num_heads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if height % ph or width % pw:
            raise ValueError(f"state size {height}x{width} must be divisible by patch_size {(ph, pw)}")
        if d_model % num_heads or d_model % 2:
            raise ValueError(f"d_model={d_model} must be even and divisible by num_heads={num_heads}")
        require_non_negative("in_blocks", in_blocks)
        require_non_negative("mid_blocks", mid_blocks)
        self.channels, self.height, self.width, self.patch = channels, height, width, (ph, pw)
        self.grid = (height // ph, width // pw)
        self.time_scale = time_scale
        token_in = 3 * channels * ph * pw
        self.embed = nn.Linear(token_in, d_model)
        self.position = nn.Parameter(torch.randn(1, self.grid[0] * self.grid[1], d_model) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.distance_mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model))

        def block() -> nn.Module:
            return nn.TransformerEncoderLayer(d_model, num_heads, int(mlp_ratio * d_model), dropout=dropout,
                                              activation="gelu", batch_first=True, norm_first=True)

        self.down = nn.ModuleList(block() for _ in range(in_blocks))
        self.mid = nn.ModuleList(block() for _ in range(mid_blocks))
        self.up = nn.ModuleList(block() for _ in range(in_blocks))
        self.fuse = nn.ModuleList(nn.Linear(2 * d_model, d_model) for _ in range(in_blocks))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, channels * ph * pw))
        self.out_conv = nn.Conv2d(channels, channels, 3, padding=1)

    def _tokens(self, x: Tensor) -> Tensor:
        """``[B, K, H, W] -> [B, N, K·ph·pw]``."""
        b, k, _, _ = x.shape
        (ph, pw), (gh, gw) = self.patch, self.grid
        x = x.reshape(b, k, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, gh * gw, k * ph * pw)

    def _untokens(self, tokens: Tensor) -> Tensor:
        """``[B, N, C·ph·pw] -> [B, C, H, W]``."""
        b = tokens.shape[0]
        (ph, pw), (gh, gw) = self.patch, self.grid
        x = tokens.reshape(b, gh, gw, self.channels, ph, pw).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, self.channels, self.height, self.width)

    def forward(self, x_t: Tensor, t: Tensor, z_ref: Tensor, z_cond: Tensor, distance: Tensor) -> Tensor:
        """Args: ``x_t, z_ref, z_cond [B, C, H, W]``, ``t [B]``, ``distance [B]`` (>= 1). Returns ``[B, C, H, W]``."""
        expected = (self.channels, self.height, self.width)
        if tuple(x_t.shape[1:]) != expected:
            raise ValueError(f"states must have shape [B, {expected[0]}, {expected[1]}, {expected[2]}], "
                             f"got {tuple(x_t.shape)}")
        d_model = self.embed.out_features
        tokens = self.embed(self._tokens(torch.cat([x_t, z_ref, z_cond], dim=1))) + self.position
        dist = self.distance_mlp(sinusoidal_embedding(torch.log(distance.float().clamp_min(1.0)) * 100.0, d_model))
        tokens = tokens + dist[:, None]
        time = self.time_mlp(sinusoidal_embedding(t * self.time_scale, d_model))
        h = torch.cat([time[:, None], tokens], dim=1)
        skips = []
        for blk in self.down:
            h = blk(h)
            skips.append(h)
        for blk in self.mid:
            h = blk(h)
        for blk, fuse in zip(self.up, self.fuse):
            h = blk(fuse(torch.cat([h, skips.pop()], dim=-1)))
        field = self._untokens(self.head(self.norm(h[:, 1:])))
        return self.out_conv(field)
