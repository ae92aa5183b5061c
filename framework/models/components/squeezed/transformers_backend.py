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
from framework.models.components.squeezed.fixed_and_dynamic import attend_fixed_and_dynamic

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
    """

    index: object
    selector: nn.Module
    meter: BudgetMeter = field(default_factory=BudgetMeter)
    diagnostics: bool = False
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
        selection = self.selector.select(query, layer, scale=scale)
        backend = getattr(self.selector, "backend", "auto")
        result = attend_fixed_and_dynamic(
            query, key, value, selection, num_fixed=n, scale=scale, dynamic_mask=dynamic_mask, backend=backend
        )
        self._record(selection.key_counts, n, self.selector.metadata_vectors(layer))
        if self.diagnostics:
            self._diagnose(query, key, value, selection, result.out, n, scale, dynamic_mask)
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

    def _diagnose(self, query, key, value, selection, out, n, scale, dynamic_mask) -> None:
        """Dense attention over the same q/k/v: relative output error and fixed-context mass recall per row."""
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
        idx = selection.key_indices.long()
        valid = torch.arange(idx.shape[-1], device=key.device).view(1, 1, -1) < selection.key_counts.long().unsqueeze(-1)
        # padding entries go to an extra column that is dropped (writing False at index 0 could clear key 0)
        keep = torch.zeros(b, hkv, n + 1, dtype=torch.bool, device=key.device)
        keep.scatter_(-1, torch.where(valid, idx, torch.full_like(idx, n)), True)
        keep = keep[..., :n]
        kept_mass = (fixed * keep.repeat_interleave(group, dim=1).unsqueeze(2)).sum(-1)
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


@contextmanager
def capture_queries(model: nn.Module, window: int) -> Iterator[QueryCapture]:
    """Run the model densely while recording the post-RoPE queries of the last `window` positions per layer."""
    capture = QueryCapture(window)
    with _attached(model, capture):
        yield capture


@contextmanager
def serve(model: nn.Module, index, selector: nn.Module, *, diagnostics: bool = False) -> Iterator[ServingSession]:
    """Serve user inputs against `index` with `selector` choosing the fixed-context keys.

    Args:
        model: a Transformers causal LM of the shape the index was built for.
        index: `FixedContextIndex`.
        selector: `SqueezedAttention` (bound to the index here) or a baseline selector.
        diagnostics: also measure output error / attention-mass recall against dense attention (slower).

    Yields:
        `ServingSession` with the measured budget and diagnostics.
    """
    index.check_model(model)
    bind = getattr(selector, "bind", None)
    if bind is not None:
        bind(index)
    session = ServingSession(index=index, selector=selector, diagnostics=diagnostics)
    with _attached(model, session):
        yield session


register_squeezed_backend()
