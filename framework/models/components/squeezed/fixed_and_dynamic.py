"""Exact attention of user-input queries over (selected fixed-context keys) ∪ (dynamic keys), merged by log-sum-exp.

The fixed context occupies cache positions 0 .. N-1 and precedes every query, so its part needs no causal mask. The
dynamic part (user input and generated tokens, cache positions N .. L-1) is attended densely and causally, aligned
bottom-right (the T queries are the last T dynamic tokens).
"""

from __future__ import annotations

import torch

from framework.kernels.squeezed_attention import AttentionResult, Selection, dense_attention, merge_attention, sparse_attention


def masked_dense_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, *, scale: float
) -> AttentionResult:
    """Dense attention with an explicit boolean mask, returning output and log-sum-exp (pure PyTorch).

    Args:
        query: [B, Hq, T, D].
        key: [B, Hkv, M, D] with Hq % Hkv == 0.
        value: [B, Hkv, M, D].
        mask: [B, 1 or Hq, T, M] bool, True where a query may attend a key.
        scale: softmax scale.

    Returns:
        `AttentionResult` with `out` [B, Hq, T, D] (0 for fully masked rows) and `lse` [B, Hq, T] fp32 (-inf there).
    """
    group = query.shape[1] // key.shape[1]
    k = key.float().repeat_interleave(group, dim=1)
    v = value.float().repeat_interleave(group, dim=1)
    scores = torch.matmul(query.float(), k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    probs = torch.exp(scores - safe.unsqueeze(-1))
    out = torch.matmul(probs, v)
    return AttentionResult(out=out.to(query.dtype), lse=lse)


def attend_fixed_and_dynamic(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    selection: Selection,
    *,
    num_fixed: int,
    scale: float,
    dynamic_mask: torch.Tensor | None = None,
    backend: str = "auto",
) -> AttentionResult:
    """Sparse attention over the selected fixed-context keys, dense over the rest, merged exactly.

    Args:
        query: [B, Hq, T, D] queries of the user-input / generated tokens.
        key: [B, Hkv, L, D] the whole cache: fixed context at 0 .. N-1, dynamic tokens at N .. L-1 (L >= N + T).
        value: [B, Hkv, L, D].
        selection: `Selection` over the N fixed-context keys, one per (batch row, KV head).
        num_fixed: N.
        scale: softmax scale.
        dynamic_mask: [B, 1 or Hq, T, L - N] bool (padding + causal) or None for plain bottom-right causal.
        backend: kernel backend ("auto" | "triton" | "reference").

    Returns:
        `AttentionResult` with `out` [B, Hq, T, D] and `lse` [B, Hq, T].
    """
    fixed = sparse_attention(
        query, key[:, :, :num_fixed], value[:, :, :num_fixed], selection, scale=scale, backend=backend
    )
    if key.shape[2] == num_fixed:
        return fixed
    k_dyn, v_dyn = key[:, :, num_fixed:], value[:, :, num_fixed:]
    if dynamic_mask is None:
        dynamic = dense_attention(query, k_dyn, v_dyn, causal=True, scale=scale, backend=backend)
    else:
        dynamic = masked_dense_attention(query, k_dyn, v_dyn, dynamic_mask, scale=scale)
    return merge_attention(fixed, dynamic)
