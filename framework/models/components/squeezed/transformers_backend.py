"""Transformers attention backend "squeezed" (registered through `transformers.AttentionInterface`).

`register_squeezed_backend()` registers it (idempotent; importing `framework.models.components.squeezed` does it). A model
loaded or switched with `attn_implementation="squeezed"` behaves exactly like "sdpa" until an index is attached with
`serve(model, index, selector)`; inside that context every attention layer attends its fixed-context cache positions
0 .. N-1 sparsely (keys chosen by the selector: `SqueezedAttention` or a baseline) and the user input / generated
tokens densely, merged by log-sum-exp. The fixed-context KV comes from `index.new_cache()`, which `model.generate`
reuses as a prefix cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from framework.models.components.squeezed.budget import BudgetMeter, BudgetReport
from framework.kernels.squeezed_attention import merge_attention
from framework.kernels.squeezed_attention.reference import masked_attention_reference, selection_mask
from framework.models.components.squeezed.fixed_and_dynamic import attend_fixed_and_dynamic, masked_dense_attention
from framework.models.components.squeezed.query_segments import check_scope, query_segments, select_segments

BACKEND_NAME = "squeezed"
_STATE_ATTR = "_squeezed_state"


def register_squeezed_backend() -> None:
    """Register the "squeezed" attention function and its mask function (boolean masks, as for "sdpa")."""
    AttentionInterface.register(BACKEND_NAME, squeezed_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(BACKEND_NAME, sdpa_mask)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The model's self-attention modules (those with `layer_idx` and `num_key_value_groups`), by layer index."""
    found = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "num_key_value_groups")]
    return sorted(found, key=lambda m: m.layer_idx)


@dataclass
class AttentionDiagnostics:
    """Running means of how far the sparse attention is from dense attention over the same q/k/v.

    Attributes:
        output_error: mean over layer calls of ||o_sparse - o_dense|| / ||o_dense||.
        mass_recall: mean over (layer, batch, head, query) of the exact fixed-context attention mass on selected keys.
        calls: number of layer calls averaged.
    """

    output_error: float = float("nan")
    mass_recall: float = float("nan")
    calls: int = 0


@dataclass
class _Accumulator:
    """Per batch row: sums of output error and mass recall over layer calls."""

    err_sum: list[float] = field(default_factory=list)
    recall_sum: list[float] = field(default_factory=list)
    calls: int = 0

    def add(self, errors: list[float], recalls: list[float]) -> None:
        if not self.err_sum:
            self.err_sum = [0.0] * len(errors)
            self.recall_sum = [0.0] * len(errors)
        for i, (e, r) in enumerate(zip(errors, recalls)):
            self.err_sum[i] += e
            self.recall_sum[i] += r
        self.calls += 1


class QueryCapture:
    """Collects the post-RoPE queries of the last `window` tokens of every layer during a dense forward."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.queries: dict[int, torch.Tensor] = {}

    def __call__(self, module, query, key, value, attention_mask, dropout, scaling, kwargs):
        if self.window > 0:
            self.queries[module.layer_idx] = query[:, :, -self.window :, :].detach().float().clone()
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )


@dataclass
class ServingSession:
    """State shared by the attention layers of a model while `serve` is active.

    Attributes:
        index: the `FixedContextIndex` served.
        selector: `SqueezedAttention`, a baseline selector or a `RowwiseSelector` (anything with `select` and
            `metadata_vectors`; the latter may return one count per batch row).
        meter: `BudgetMeter` of every selection made (all rows).
        diagnostics: when True, also compute dense attention per layer call for output error / mass recall.
        selection_scope: which queries share a selection ("input": the paper; "last"; "token"), see
            `query_segments`.
        decode_positions: the last `decode_positions` queries of every forward pass are teacher-forced decode
            steps, each with its own selection (set by `teacher_forced`; 0 = plain prefill / decode).
    """

    index: object
    selector: nn.Module
    meter: BudgetMeter = field(default_factory=BudgetMeter)
    diagnostics: bool = False
    selection_scope: str = "input"
    decode_positions: int = 0
    _acc: _Accumulator = field(default_factory=_Accumulator)
    _row_meters: list[BudgetMeter] = field(default_factory=list)

    def budget(self, row: int | None = None) -> BudgetReport:
        """Measured budget (§3.7) over all selections since the last `reset` (of one batch row if `row` is given)."""
        if row is None:
            return self.meter.report()
        return self._row_meters[row].report()

    def attention_diagnostics(self, row: int | None = None) -> AttentionDiagnostics:
        """Output error and attention-mass recall since the last `reset` (needs diagnostics=True), all rows or one."""
        a = self._acc
        if a.calls == 0:
            return AttentionDiagnostics()
        if row is None:
            rows = len(a.err_sum)
            return AttentionDiagnostics(
                output_error=sum(a.err_sum) / (a.calls * rows),
                mass_recall=sum(a.recall_sum) / (a.calls * rows),
                calls=a.calls,
            )
        return AttentionDiagnostics(
            output_error=a.err_sum[row] / a.calls, mass_recall=a.recall_sum[row] / a.calls, calls=a.calls
        )

    @contextmanager
    def teacher_forced(self, decode_positions: int) -> Iterator["ServingSession"]:
        """Within this block the last `decode_positions` queries of each forward pass are scored as decode steps.

        One forward over user input + answer[:-1] then makes exactly the selections that prefill + token-by-token
        greedy decoding would make (`answer_scoring.score_answer_rows`).
        """
        if isinstance(decode_positions, bool) or not isinstance(decode_positions, int) or decode_positions < 0:
            raise ValueError(f"decode_positions must be an int >= 0, got {decode_positions!r}")
        previous, self.decode_positions = self.decode_positions, decode_positions
        try:
            yield self
        finally:
            self.decode_positions = previous

    def reset(self) -> None:
        """Clear the budget meters and diagnostics."""
        self.meter.reset()
        self._row_meters = []
        self._acc = _Accumulator()

    def __call__(self, module, query, key, value, attention_mask, dropout, scaling, kwargs):
        layer = self.index.layers[module.layer_idx]
        n = layer.num_tokens
        check_fixed_prefix(query.shape[2], key.shape[2], n, where=f"layer {module.layer_idx}")
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        dynamic_mask = _dynamic_mask(attention_mask, n)
        t = query.shape[2]
        segments = query_segments(
            t, scope=self.selection_scope, decode_positions=min(self.decode_positions, t)
        )
        metadata = self.selector.metadata_vectors(layer)
        if len(segments) == 1:
            selection = self.selector.select(query, layer, scale=scale)
            backend = getattr(self.selector, "backend", "auto")
            result = attend_fixed_and_dynamic(
                query, key, value, selection, num_fixed=n, scale=scale, dynamic_mask=dynamic_mask, backend=backend
            )
            self._record(selection.key_counts, n, metadata)
            keep = selection_mask(selection, n).unsqueeze(2) if self.diagnostics else None
        else:
            # one selection per segment: exact attention of each query over its own keys (reference path)
            chosen = select_segments(self.selector, query, layer, scale=scale, segments=segments)
            keep = chosen.keep
            fixed = masked_attention_reference(query, key[:, :, :n], value[:, :, :n], keep, scale)
            dyn_k, dyn_v = key[:, :, n:], value[:, :, n:]
            if dynamic_mask is None:
                length = dyn_k.shape[2]
                causal = torch.arange(length, device=key.device).view(1, length) <= (
                    torch.arange(t, device=key.device).view(t, 1) + (length - t)
                )
                dynamic_mask = causal.view(1, 1, t, length)
            result = merge_attention(fixed, masked_dense_attention(query, dyn_k, dyn_v, dynamic_mask, scale=scale))
            for counts in chosen.key_counts:
                self._record(counts, n, metadata)
        if self.diagnostics:
            self._diagnose(query, key, value, keep, result.out, n, scale, dynamic_mask)
        return result.out.transpose(1, 2).contiguous(), None

    def _record(self, key_counts: torch.Tensor, n: int, metadata) -> None:
        rows = key_counts.shape[0]
        per_row = list(metadata) if isinstance(metadata, (list, tuple)) else [metadata] * rows
        if len(per_row) != rows:
            raise ValueError(f"selector reported metadata for {len(per_row)} rows, the batch has {rows}")
        if not self._row_meters:
            self._row_meters = [BudgetMeter() for _ in range(rows)]
        for b in range(rows):
            self.meter.record(key_counts[b : b + 1], n, per_row[b])
            self._row_meters[b].record(key_counts[b : b + 1], n, per_row[b])

    def _diagnose(self, query, key, value, keep, out, n, scale, dynamic_mask) -> None:
        """Dense attention over the same q/k/v: relative output error and fixed-context mass recall per row.

        `keep`: [B, Hkv, T or 1, N] bool, the fixed-context keys each query attended.
        """
        b, hq, t, _ = query.shape
        hkv, length = key.shape[1], key.shape[2]
        group = hq // hkv
        k = key.float().repeat_interleave(group, dim=1)
        v = value.float().repeat_interleave(group, dim=1)
        scores = torch.matmul(query.float(), k.transpose(-1, -2)) * scale  # [B, Hq, T, L]
        if dynamic_mask is None:
            # fixed context fully visible; dynamic part causal, aligned bottom-right
            rows = torch.arange(t, device=key.device).view(t, 1) + (length - t)
            visible = torch.arange(length, device=key.device).view(1, length) <= rows
            scores = scores.masked_fill(~visible, float("-inf"))
        else:
            fixed_ok = torch.ones(*dynamic_mask.shape[:-1], n, dtype=torch.bool, device=key.device)
            scores = scores.masked_fill(~torch.cat([fixed_ok, dynamic_mask], -1), float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        dense = torch.matmul(probs, v)
        diff = (out.float() - dense).flatten(1).norm(dim=1)
        errors = (diff / dense.flatten(1).norm(dim=1).clamp_min(1e-30)).tolist()
        fixed = probs[..., :n]
        kept_mass = (fixed * keep.repeat_interleave(group, dim=1)).sum(-1)
        recall = (kept_mass / fixed.sum(-1).clamp_min(1e-30)).flatten(1).mean(1).tolist()
        self._acc.add(errors, recall)


def check_fixed_prefix(num_queries: int, num_keys: int, num_fixed: int, *, where: str) -> None:
    """Refuse a forward pass whose cache does not start with the fixed context, or whose queries re-feed it.

    The cache must hold the N fixed-context positions first and the T queries must all come after them
    (T <= L - N). A forward over `context + question` without `cache=index.new_cache()` has T = L, so its first N
    queries would be treated as fixed-context positions with no causal mask: wrong outputs, no error. Shape-only
    (host ints), so it costs nothing and is safe under CUDA-graph capture.

    Args:
        num_queries: T, query tokens of this forward pass.
        num_keys: L, keys in the cache including this pass's tokens.
        num_fixed: N, fixed-context length.
        where: prefix of the error message (e.g. the layer).
    """
    if num_keys < num_fixed:
        raise ValueError(
            f"{where}: the cache holds {num_keys} tokens but the fixed context has {num_fixed}; "
            "pass cache=index.new_cache() (or index.new_cache(batch_size)) and feed only the user input"
        )
    if num_queries > num_keys - num_fixed:
        raise ValueError(
            f"{where}: this forward pass feeds {num_queries} tokens, but only {num_keys - num_fixed} positions follow "
            f"the {num_fixed}-token fixed context: the input re-feeds (part of) the fixed context instead of reusing "
            "the index's KV. Pass cache=index.new_cache() and feed only the user input (model.generate does this "
            "when given input_ids=context+question and cache=index.new_cache())"
        )


def _dynamic_mask(attention_mask: torch.Tensor | None, num_fixed: int) -> torch.Tensor | None:
    """Slice the model's 4-D mask to the dynamic keys, checking the fixed context is fully visible."""
    if attention_mask is None:
        return None
    mask = attention_mask if attention_mask.dtype == torch.bool else attention_mask > torch.finfo(attention_mask.dtype).min / 2
    if not bool(mask[..., :num_fixed].all()):
        raise ValueError(
            "the attention mask hides part of the fixed context; padding is only supported in the user input "
            "(after the fixed-context tokens)"
        )
    return mask[..., num_fixed:]


def squeezed_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The function Transformers calls for `attn_implementation="squeezed"`.

    Args:
        module: the model's attention module (has `layer_idx`).
        query: [B, Hq, T, D] post-RoPE queries.
        key: [B, Hkv, L, D] all cached keys (fixed context first when serving).
        value: [B, Hkv, L, D].
        attention_mask: None or [B, 1, T, L] bool / additive float mask.
        dropout: must be 0 while serving (inference only).
        scaling: softmax scale.

    Returns:
        (attention output [B, T, Hq, D], None).
    """
    state = module.__dict__.get(_STATE_ATTR)
    if state is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if dropout:
        raise ValueError(f"squeezed attention serves inference only; attention dropout must be 0, got {dropout}")
    return state(module, query, key, value, attention_mask, dropout, scaling, kwargs)


@contextmanager
def _attached(model: nn.Module, state) -> Iterator[None]:
    modules = attention_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no attention modules with a layer_idx (Llama-family expected)")
    previous = model.config._attn_implementation
    model.set_attn_implementation(BACKEND_NAME)
    for m in modules:
        m.__dict__[_STATE_ATTR] = state
    try:
        yield
    finally:
        for m in modules:
            m.__dict__.pop(_STATE_ATTR, None)
        model.set_attn_implementation(previous)


def active_session(model: nn.Module) -> "ServingSession | None":
    """The `ServingSession` attached to `model` by an enclosing `serve(...)`, or None outside one."""
    for module in model.modules():
        if hasattr(module, "layer_idx") and hasattr(module, "num_key_value_groups"):
            state = module.__dict__.get(_STATE_ATTR)
            return state if isinstance(state, ServingSession) else None
    return None


@contextmanager
def capture_queries(model: nn.Module, window: int) -> Iterator[QueryCapture]:
    """Run the model densely while recording the post-RoPE queries of the last `window` positions per layer."""
    capture = QueryCapture(window)
    with _attached(model, capture):
        yield capture


@contextmanager
def serve(
    model: nn.Module, index, selector: nn.Module, *, diagnostics: bool = False, selection_scope: str = "input"
) -> Iterator[ServingSession]:
    """Serve user inputs against `index` with `selector` choosing the fixed-context keys.

    Args:
        model: a Transformers causal LM of the shape the index was built for.
        index: `FixedContextIndex`.
        selector: `SqueezedAttention` (bound to the index here) or a baseline selector.
        diagnostics: also measure output error / attention-mass recall against dense attention (slower).
        selection_scope: "input" (the paper: one selection per user input and per decode step), "last" (the last
            input token selects alone) or "token" (every query token selects its own keys); see `query_segments`.

    Yields:
        `ServingSession` with the measured budget and diagnostics.
    """
    check_scope(selection_scope)
    index.check_model(model)
    bind = getattr(selector, "bind", None)
    if bind is not None:
        bind(index)
    session = ServingSession(index=index, selector=selector, diagnostics=diagnostics, selection_scope=selection_scope)
    with _attached(model, session):
        yield session


register_squeezed_backend()
