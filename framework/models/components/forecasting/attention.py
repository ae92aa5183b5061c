"""Horizon-specific attention over the encoded history with an additive −inf mask (MQ-Transformer's context
alignment and SPADE's Peak Attention)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MaskedHorizonAttention", "AttentionOutput"]


@dataclass
class AttentionOutput:
    """``context [B, F, H, d_model]``; ``weights [B, heads, F, H, L]`` (exactly 0 on masked positions) or None;
    ``empty [B, F]``: forks with no allowed position (they get the learned default context)."""

    context: Tensor
    weights: Tensor | None
    empty: Tensor


class MaskedHorizonAttention(nn.Module):
    """Multi-head attention of ``(fork t, horizon h)`` queries over history positions τ.

    Disallowed positions get an additive −inf before the softmax, so their weight is exactly zero (a multiplicative
    mask inside the softmax would still give them weight, note §1.2). Forks with no allowed position return a learned
    default vector instead of the NaN of an all −inf softmax.

    Args:
        query_dim, key_dim, value_dim: input widths. d_model: attention width. num_heads: heads (divide d_model).
    """

    def __init__(self, *, query_dim: int, key_dim: int, value_dim: int, d_model: int = 32, num_heads: int = 4) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}")
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.query = nn.Linear(query_dim, d_model)
        self.key = nn.Linear(key_dim, d_model)
        self.value = nn.Linear(value_dim, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.default = nn.Parameter(torch.zeros(d_model))
        self.d_model = d_model

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, allowed: Tensor, *,
                return_weights: bool = False) -> AttentionOutput:
        """``queries [B, F, H, Dq]``, ``keys [B, L, Dk]``, ``values [B, L, Dv]``, ``allowed [B, F, L]`` bool."""
        B, Fk, H, _ = queries.shape
        L = keys.shape[1]
        nh, dh = self.num_heads, self.head_dim
        empty = ~allowed.any(dim=-1)                                               # [B, F]
        # Keep only positions some fork may see (SPADE: past peaks, a few % of the history): exact, and cheaper.
        any_allowed = allowed.any(dim=1)                                           # [B, L]
        count = int(any_allowed.sum(dim=1).max())
        positions = None
        if 0 < count < L:
            order = torch.argsort((~any_allowed).to(torch.int8), dim=1, stable=True)[:, :count]   # [B, K]
            positions = order
            keys = torch.gather(keys, 1, order[..., None].expand(-1, -1, keys.shape[-1]))
            values = torch.gather(values, 1, order[..., None].expand(-1, -1, values.shape[-1]))
            allowed = torch.gather(allowed, 2, order[:, None, :].expand(-1, Fk, -1))
        K = keys.shape[1]
        q = self.query(queries).view(B, Fk * H, nh, dh).transpose(1, 2)              # [B, nh, F·H, dh]
        k = self.key(keys).view(B, K, nh, dh).transpose(1, 2)                      # [B, nh, K, dh]
        v = self.value(values).view(B, K, nh, dh).transpose(1, 2)
        # Rows with nothing allowed would be all −inf (NaN softmax): let them see everything, then replace.
        safe = allowed | empty[..., None]
        mask = safe[:, None, :, None, :].expand(B, 1, Fk, H, K).reshape(B, 1, Fk * H, K)
        weights = None
        if return_weights:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
            weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)   # additive −inf mask
            context = weights @ v
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)       # same math, fused kernel
        context = self.out(context.transpose(1, 2).reshape(B, Fk, H, nh * dh))
        context = torch.where(empty[:, :, None, None], self.default.expand_as(context), context)
        if weights is not None:
            weights = weights.view(B, nh, Fk, H, K).masked_fill(empty[:, None, :, None, None], 0.0)
            if positions is not None:
                full = weights.new_zeros(B, nh, Fk, H, L)
                index = positions[:, None, None, None, :].expand(B, nh, Fk, H, K)
                weights = full.scatter(-1, index, weights)
        return AttentionOutput(context=context, weights=weights, empty=empty)
