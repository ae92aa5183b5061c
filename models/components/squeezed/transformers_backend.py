"""Transformers attention backend "squeezed" (registered through `transformers.AttentionInterface`).

`register_squeezed_backend()` registers it (idempotent; importing `models.components.squeezed` does it). A model
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

from models.components.squeezed.budget import BudgetMeter, BudgetReport
from models.components.squeezed.fixed_and_dynamic import attend_fixed_and_dynamic

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
    err_sum: float = 0.0
    recall_sum: float = 0.0
    calls: int = 0


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
        selector: `SqueezedAttention` or a baseline selector (anything with `select` and `metadata_vectors`).
        meter: `BudgetMeter` of every selection made.
        diagnostics: when True, also compute dense attention per layer call for output error / mass recall.
    """

    index: object
    selector: nn.Module
    meter: BudgetMeter = field(default_factory=BudgetMeter)
    diagnostics: bool = False
    _acc: _Accumulator = field(default_factory=_Accumulator)

    def budget(self) -> BudgetReport:
        """Measured budget (§3.7) over all selections since the last `reset`."""
        return self.meter.report()

    def attention_diagnostics(self) -> AttentionDiagnostics:
        """Output error and attention-mass recall since the last `reset` (needs diagnostics=True)."""
        a = self._acc
        if a.calls == 0:
            return AttentionDiagnostics()
        return AttentionDiagnostics(output_error=a.err_sum / a.calls, mass_recall=a.recall_sum / a.calls, calls=a.calls)

    def reset(self) -> None:
        """Clear the budget meter and diagnostics."""
        self.meter.reset()
        self._acc = _Accumulator()

    def __call__(self, module, query, key, value, attention_mask, dropout, scaling, kwargs):
        layer = self.index.layers[module.layer_idx]
        n = layer.num_tokens
        if key.shape[2] < n:
            raise ValueError(
                f"layer {module.layer_idx}: the cache holds {key.shape[2]} tokens but the fixed context has {n}; "
                "pass past_key_values=index.new_cache(batch_size) and the context tokens before the user input"
            )
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        dynamic_mask = _dynamic_mask(attention_mask, n)
        selection = self.selector.select(query, layer, scale=scale)
        backend = getattr(self.selector, "backend", "auto")
        result = attend_fixed_and_dynamic(
            query, key, value, selection, num_fixed=n, scale=scale, dynamic_mask=dynamic_mask, backend=backend
        )
        self.meter.record(selection.key_counts, n, self.selector.metadata_vectors(layer))
        if self.diagnostics:
            self._diagnose(query, key, value, selection, result.out, n, scale, dynamic_mask)
        return result.out.transpose(1, 2).contiguous(), None

    def _diagnose(self, query, key, value, selection, out, n, scale, dynamic_mask) -> None:
        from kernels.squeezed_attention import Selection

        b, hkv = key.shape[0], key.shape[1]
        full = Selection(
            key_indices=torch.arange(n, dtype=torch.int32, device=key.device).expand(b, hkv, n).contiguous(),
            key_counts=torch.full((b, hkv), n, dtype=torch.int32, device=key.device),
            cluster_scores=torch.zeros(b, hkv, 0, device=key.device),
        )
        dense = attend_fixed_and_dynamic(
            query, key, value, full, num_fixed=n, scale=scale, dynamic_mask=dynamic_mask, backend="reference"
        ).out.float()
        err = (out.float() - dense).norm() / dense.norm().clamp_min(1e-30)
        group = query.shape[1] // hkv
        k = key[:, :, :n].float().repeat_interleave(group, dim=1)
        probs = torch.softmax(torch.matmul(query.float(), k.transpose(-1, -2)) * scale, dim=-1)  # [B, Hq, T, N]
        keep = torch.zeros(b, hkv, n, dtype=torch.bool, device=key.device)
        idx = selection.key_indices.long()
        valid = torch.arange(idx.shape[-1], device=key.device).view(1, 1, -1) < selection.key_counts.long().unsqueeze(-1)
        keep.scatter_(-1, torch.where(valid, idx, torch.zeros_like(idx)), valid)
        recall = (probs * keep.repeat_interleave(group, dim=1).unsqueeze(2)).sum(-1).mean()
        self._acc.err_sum += float(err)
        self._acc.recall_sum += float(recall)
        self._acc.calls += 1


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
