"""Helpers that turn per-key choices into the kernels' `Selection` (shared by Squeezed Attention and baselines)."""

from __future__ import annotations

import torch

from framework.kernels.squeezed_attention import Selection


def selection_from_indices(indices: torch.Tensor, counts: torch.Tensor | None = None) -> Selection:
    """Build a `Selection` from unordered key indices.

    Args:
        indices: [B, Hkv, K] integer indices into the N fixed-context keys (entries past `counts` are ignored).
        counts: [B, Hkv] number of valid entries per row; None means all K are valid.

    Returns:
        `Selection` with ascending `key_indices` [B, Hkv, K] int32 (padded with 0), `key_counts` [B, Hkv] int32 and an
        empty `cluster_scores` [B, Hkv, 0].
    """
    b, h, k = indices.shape
    indices = indices.long()
    if counts is None:
        counts = torch.full((b, h), k, dtype=torch.int64, device=indices.device)
    counts = counts.long()
    valid = torch.arange(k, device=indices.device).view(1, 1, k) < counts.unsqueeze(-1)
    big = torch.iinfo(torch.int64).max
    ordered = torch.sort(torch.where(valid, indices, torch.full_like(indices, big)), dim=-1).values
    ordered = torch.where(valid, ordered, torch.zeros_like(ordered))
    return Selection(
        key_indices=ordered.to(torch.int32),
        key_counts=counts.to(torch.int32),
        cluster_scores=torch.zeros(b, h, 0, dtype=torch.float32, device=indices.device),
    )


def selection_from_mask(mask: torch.Tensor) -> Selection:
    """Build a `Selection` from a boolean key mask.

    Args:
        mask: [B, Hkv, N] bool, True for kept keys.

    Returns:
        `Selection` whose `key_indices` [B, Hkv, K_max] list the True positions in ascending order.
    """
    b, h, n = mask.shape
    counts = mask.sum(-1)
    k_max = max(int(counts.max().item()) if mask.numel() else 0, 1)
    # A stable sort of ~mask puts kept positions first, in ascending order.
    order = torch.sort((~mask).to(torch.int8), dim=-1, stable=True).indices[..., :k_max]
    return selection_from_indices(order, counts)


def append_always_kept(selection: Selection, first: int, count: int) -> Selection:
    """Append keys `first .. first + count - 1` to every row of a selection.

    The appended keys must come after every key already selected (true for the observation window, which is the tail
    of the fixed context), so the rows stay ascending.

    Args:
        selection: `Selection` with `key_indices` [B, Hkv, K] over keys < `first`.
        first: index of the first appended key.
        count: number of appended keys (0 returns the selection unchanged).

    Returns:
        `Selection` with `key_indices` [B, Hkv, K + count] and `key_counts` increased by `count`.
    """
    if count == 0:
        return selection
    idx = selection.key_indices.long()
    b, h, k = idx.shape
    counts = selection.key_counts.long()
    out = torch.zeros(b, h, k + count, dtype=torch.int64, device=idx.device)
    out[..., :k] = torch.where(
        torch.arange(k, device=idx.device).view(1, 1, k) < counts.unsqueeze(-1), idx, torch.zeros_like(idx)
    )
    pos = counts.unsqueeze(-1) + torch.arange(count, device=idx.device).view(1, 1, count)
    tail = (first + torch.arange(count, device=idx.device)).view(1, 1, count).expand(b, h, count)
    out.scatter_(-1, pos, tail)
    return Selection(
        key_indices=out.to(torch.int32),
        key_counts=(counts + count).to(torch.int32),
        cluster_scores=selection.cluster_scores,
    )


def frame_selection(selection: Selection, *, sinks: int, tail_first: int, tail_count: int) -> Selection:
    """Shift a selection over the clustered keys into fixed-context positions and add the always-attended keys.

    The clustered keys are fixed-context positions `sinks .. tail_first - 1`; a lookup over them returns indices
    relative to `sinks`. The result lists the sinks 0 .. sinks-1, the shifted selection, then the tail
    `tail_first .. tail_first + tail_count - 1` (observation window), all ascending.

    Args:
        selection: `Selection` over the clustered keys, `key_indices` [B, Hkv, K].
        sinks: number of leading always-attended keys (attention sinks).
        tail_first: first position of the trailing always-attended keys.
        tail_count: number of trailing always-attended keys.

    Returns:
        `Selection` with `key_indices` [B, Hkv, sinks + K + tail_count].
    """
    if sinks == 0:
        return append_always_kept(selection, tail_first, tail_count)
    idx = selection.key_indices.long()
    b, h, k = idx.shape
    counts = selection.key_counts.long()
    valid = torch.arange(k, device=idx.device).view(1, 1, k) < counts.unsqueeze(-1)
    head = torch.arange(sinks, device=idx.device).view(1, 1, sinks).expand(b, h, sinks)
    body = torch.where(valid, idx + sinks, torch.zeros_like(idx))
    shifted = Selection(
        key_indices=torch.cat([head, body], dim=-1).to(torch.int32),
        key_counts=(counts + sinks).to(torch.int32),
        cluster_scores=selection.cluster_scores,
    )
    return append_always_kept(shifted, tail_first, tail_count)
