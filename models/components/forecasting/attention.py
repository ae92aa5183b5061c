"""Horizon-specific attention over the encoded history with an additive −inf mask (MQ-Transformer's context
alignment and SPADE's Peak Attention)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
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
        q = self.query(queries).view(B, Fk, H, nh, dh).permute(0, 3, 1, 2, 4)        # [B, nh, F, H, dh]
        k = self.key(keys).view(B, L, nh, dh).transpose(1, 2)                      # [B, nh, L, dh]
        v = self.value(values).view(B, L, nh, dh).transpose(1, 2)
        scores = torch.einsum("bnfhd,bnld->bnfhl", q, k) / math.sqrt(dh)
        empty = ~allowed.any(dim=-1)                                               # [B, F]
        # Rows with nothing allowed would be all −inf (NaN softmax): let them see everything, then replace.
        safe = allowed | empty[..., None]
        bias = torch.zeros(safe.shape, dtype=scores.dtype, device=scores.device).masked_fill(~safe, float("-inf"))
        weights = torch.softmax(scores + bias[:, None, :, None, :], dim=-1)
        context = torch.einsum("bnfhl,bnld->bnfhd", weights, v).permute(0, 2, 3, 1, 4).reshape(B, Fk, H, nh * dh)
        context = self.out(context)
        context = torch.where(empty[:, :, None, None], self.default.expand_as(context), context)
        if return_weights:
            weights = weights.masked_fill(empty[:, None, :, None, None], 0.0)
        return AttentionOutput(context=context, weights=weights if return_weights else None, empty=empty)
