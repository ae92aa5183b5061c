"""Which query tokens share one key selection (the selection scope), and selections per segment of queries.

The paper makes ONE selection for the whole user input (scores averaged over all its queries) and one per generated
token. A needle is often read by only the last few input tokens, whose need is diluted in that average (issue 21's
attribution), so we also let every query token select its own keys:

- "input" (the paper): the user-input tokens of a forward pass share one selection; each decode step has its own.
- "last": like "input", but the last user-input token (the one that predicts the first answer token) selects alone.
- "token": every query token selects its own keys (decode-style selection for every user-input token).

A forward pass may also end with `decode_positions` teacher-forced answer tokens (scoring an answer in one pass
instead of one pass per token): each of them is its own segment, exactly as in token-by-token greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from framework.kernels.squeezed_attention.reference import selection_mask
from framework.models.components.squeezed.baselines import RowwiseSelector
from framework.models.components.squeezed.layer_index import LayerIndex

SELECTION_SCOPES = ("input", "last", "token")


def check_scope(scope: str) -> str:
    """`scope` if it is one of `SELECTION_SCOPES`, else ValueError naming it."""
    if scope not in SELECTION_SCOPES:
        raise ValueError(f"selection_scope must be one of {SELECTION_SCOPES}, got {scope!r}")
    return scope


def query_segments(num_queries: int, *, scope: str, decode_positions: int = 0) -> list[tuple[int, int]]:
    """Split the T queries of one forward pass into [start, end) segments that each get one selection.

    Args:
        num_queries: T >= 1.
        scope: one of `SELECTION_SCOPES`.
        decode_positions: D in [0, T]: the last D queries are teacher-forced decode steps, one segment each (D == T:
            the whole pass is decode steps).

    Returns:
        ascending, contiguous segments covering 0 .. T-1.
    """
    check_scope(scope)
    if num_queries < 1:
        raise ValueError(f"num_queries must be >= 1, got {num_queries}")
    if not 0 <= decode_positions <= num_queries:
        raise ValueError(f"decode_positions must be in [0, {num_queries}], got {decode_positions}")
    prefill = num_queries - decode_positions
    segments: list[tuple[int, int]] = []
    if prefill > 0:
        if scope == "token":
            segments += [(i, i + 1) for i in range(prefill)]
        elif scope == "last" and prefill > 1:
            segments += [(0, prefill - 1), (prefill - 1, prefill)]
        else:
            segments.append((0, prefill))
    segments += [(i, i + 1) for i in range(prefill, num_queries)]
    return segments


@dataclass
class SegmentSelection:
    """Per-query key masks of one layer call.

    Attributes:
        keep: [B, Hkv, T, N] bool, the fixed-context keys each query attends.
        key_counts: one [B, Hkv] tensor of kept-key counts per segment (for budget accounting, one per lookup).
    """

    keep: torch.Tensor
    key_counts: list[torch.Tensor]


def select_segments(
    selector, query: torch.Tensor, layer: LayerIndex, *, scale: float, segments: list[tuple[int, int]]
) -> SegmentSelection:
    """One selection per segment of the queries (segments of equal length are batched into one `select` call).

    Args:
        selector: `SqueezedAttention`, a baseline selector or a `RowwiseSelector`.
        query: [B, Hq, T, D] post-RoPE queries.
        layer: the served index's `LayerIndex` of this layer.
        scale: softmax scale.
        segments: from `query_segments`.

    Returns:
        `SegmentSelection`.
    """
    b, _, t, _ = query.shape
    n = layer.num_tokens
    if isinstance(selector, RowwiseSelector):
        if b != len(selector.selectors):
            raise ValueError(f"batch has {b} rows but {len(selector.selectors)} selectors were given")
        parts = [
            select_segments(sel, query[i : i + 1], selector.row_layer(i, layer), scale=scale, segments=segments)
            for i, sel in enumerate(selector.selectors)
        ]
        keep = torch.cat([p.keep for p in parts])
        counts = [torch.cat([p.key_counts[s] for p in parts]) for s in range(len(segments))]
        return SegmentSelection(keep=keep, key_counts=counts)
    hkv = layer.keys.shape[1]
    keep = torch.zeros(b, hkv, t, n, dtype=torch.bool, device=query.device)
    counts: list[torch.Tensor | None] = [None] * len(segments)
    by_length: dict[int, list[int]] = {}
    for s, (start, end) in enumerate(segments):
        by_length.setdefault(end - start, []).append(s)
    for length, members in by_length.items():
        # segments of one length become batch rows (segment-major): one lookup call serves them all
        stacked = torch.cat([query[:, :, segments[s][0] : segments[s][1]] for s in members], dim=0)
        selection = selector.select(stacked, layer, scale=scale)
        mask = selection_mask(selection, n).view(len(members), b, hkv, n)
        kc = selection.key_counts.view(len(members), b, hkv)
        for j, s in enumerate(members):
            start, end = segments[s]
            keep[:, :, start:end] = mask[j].unsqueeze(2)
            counts[s] = kc[j]
    return SegmentSelection(keep=keep, key_counts=counts)
