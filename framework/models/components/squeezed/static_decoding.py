"""Graph-capturable serving of a Llama-family model over a compiled fixed context (static buffers, no host syncs).

`compile_fixed_context(index, ...)` turns a `FixedContextIndex` into what the Triton kernels read fastest: the
fixed-context K/V of every layer stored cluster-contiguously (one copy, shared by every sequence of a batch),
centroids in the model dtype and the calibrated thresholds. `StaticLlamaRunner` then runs the model's own modules
(embeddings, norms, projections, RoPE, MLP, head) over user input and generated tokens, with the attention of every
layer split into (fixed context) ⊕ (per-sequence tail of user input + generated tokens), merged by log-sum-exp:

- ``attention="squeezed"``: centroid lookup + sparse attention over the selected fixed-context keys;
- ``attention="dense"``: every fixed-context key (our split-K decode kernel; prefill by our Triton kernel or by
  PyTorch's flash-attention op with the query group folded into the query axis).

Both variants use the same storage and the same code outside attention, so their speed difference is the
attention's. A decode step allocates nothing whose size depends on data and never reads a GPU value on the host
(threshold selection uses ``sync=False``, top-k selection knows its size), so it can be captured in a CUDA graph
(`capture_decode`) and replayed once per generated token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from framework.kernels.squeezed_attention import (
    AttentionResult,
    ClusterLayout,
    Selection,
    centroid_lookup,
    cluster_contiguous_layout,
    dense_attention,
    merge_attention,
    rope_cache_write,
    sparse_attention,
    sparse_attention_union,
)
from framework.kernels.squeezed_attention.validation import SUPPORTED_HEAD_DIMS, interpreting

SELECTION_MODES = ("calibrated", "topk")
ATTENTION_KINDS = ("squeezed", "dense")
DENSE_PREFILL_KINDS = ("triton", "sdpa_flash")
ATTENTION_RANGE = "squeezed_static_attention"  # torch.profiler range name when `annotate` is set


def _check_budget(budget) -> float:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(float(budget)):
        raise ValueError(f"budget must be a number in (0, 1], got {budget!r}")
    if not 0.0 < float(budget) <= 1.0:
        raise ValueError(f"budget must be in (0, 1], got {budget!r}")
    return float(budget)


@dataclass(frozen=True)
class SelectionRule:
    """How the fixed-context keys are chosen at serving time.

    Attributes:
        budget: fraction in (0, 1]. "calibrated": the index's global threshold that kept this fraction of the
            clustered keys on the calibration queries (the paper's mechanism; the kept count varies per head and
            token); "topk": exactly ``ceil(budget * N)`` of the N fixed-context keys per (sequence, KV head),
            always-kept keys (observation window, sinks) included.
        mode: "calibrated" or "topk".
    """

    budget: float
    mode: str = "calibrated"

    def __post_init__(self) -> None:
        _check_budget(self.budget)
        if self.mode not in SELECTION_MODES:
            raise ValueError(f"selection mode must be one of {SELECTION_MODES}, got {self.mode!r}")


@dataclass
class CompiledLayer:
    """One layer of a compiled fixed context.

    Attributes:
        k, v: ``[1, Hkv, N, D]`` fixed-context keys / values, permuted cluster-contiguously (``layout.permutation``).
        centroids: ``[Hkv, C, D]`` in the model dtype.
        cluster_sizes: ``[Hkv, C]`` int32.
        layout: the :class:`ClusterLayout` (its ``k``/``v`` are the tensors above).
    """

    k: torch.Tensor
    v: torch.Tensor
    centroids: torch.Tensor
    cluster_sizes: torch.Tensor
    layout: ClusterLayout


@dataclass
class CompiledContext:
    """A fixed context ready for graph-captured serving.

    Attributes:
        layers: one :class:`CompiledLayer` per attention layer.
        num_tokens: N.
        fingerprint: the index's context fingerprint (sequences of one batch must share it).
        thresholds: calibrated budget -> global threshold.
        head_dim, num_kv_heads, dtype: what the layers hold.
    """

    layers: list[CompiledLayer]
    num_tokens: int
    fingerprint: str
    thresholds: dict[float, float] = field(default_factory=dict)
    head_dim: int = 0
    num_kv_heads: int = 0
    dtype: torch.dtype = torch.bfloat16

    def nbytes(self) -> int:
        """Bytes held on the device (K, V, centroids, sizes, layout tables)."""
        total = 0
        for layer in self.layers:
            lay = layer.layout
            for t in (layer.k, layer.v, layer.centroids, layer.cluster_sizes, lay.key_labels, lay.permutation,
                      lay.cluster_offsets, lay.always_keep):
                total += t.numel() * t.element_size()
        return total


def check_kernel_support(head_dim: int, dtype: torch.dtype, device: torch.device) -> None:
    """Raise ValueError when the Squeezed Attention kernels cannot run this head dim / dtype on this device."""
    if head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head dim {head_dim} is not supported by the kernels; allowed: {SUPPORTED_HEAD_DIMS}")
    allowed = (torch.float16, torch.bfloat16, torch.float32)
    if dtype not in allowed:
        raise ValueError(f"model dtype {dtype} is not supported by the kernels; allowed: {[str(d) for d in allowed]}")
    if device.type == "cpu" and interpreting() and dtype == torch.bfloat16:
        raise ValueError("model dtype torch.bfloat16 cannot run in the Triton CPU interpreter; use float32 or float16")


@torch.no_grad()
def compile_fixed_context(index, *, budgets: tuple[float, ...] = (), dtype: torch.dtype | None = None) -> CompiledContext:
    """Store every layer of ``index`` cluster-contiguously with centroids in the model dtype.

    Args:
        index: a single-level `FixedContextIndex`.
        budgets: calibrated budgets whose thresholds are resolved now (each in (0, 1]).
        dtype: storage dtype (default: the index's key dtype).

    Returns:
        :class:`CompiledContext` (its K/V are a permuted copy; the index may be dropped afterwards).
    """
    budgets = tuple(_check_budget(b) for b in budgets)
    first = index.layers[0]
    dtype = first.keys.dtype if dtype is None else dtype
    _, hkv, n, d = first.keys.shape
    check_kernel_support(d, dtype, first.keys.device)
    layers = []
    for layer in index.layers:
        dev = layer.keys.device
        s, w, clustered = layer.attention_sinks, layer.observation_window, layer.num_clustered
        c = int(layer.centroids.shape[1])
        labels = torch.zeros(hkv, n, dtype=torch.int64, device=dev)
        labels[:, s : s + clustered] = layer.key_labels.to(dev)
        always = torch.zeros(n, dtype=torch.bool, device=dev)
        always[:s] = True
        always[s + clustered :] = True
        del w  # the tail after the clustered keys is the observation window
        lay = cluster_contiguous_layout(layer.keys.to(dtype), layer.values.to(dtype), labels, c, always_keep=always)
        layers.append(
            CompiledLayer(
                k=lay.k,
                v=lay.v,
                centroids=layer.centroids.to(device=dev, dtype=dtype).contiguous(),
                cluster_sizes=layer.cluster_sizes.to(device=dev, dtype=torch.int32).contiguous(),
                layout=lay,
            )
        )
    thresholds = {b: index.threshold_for(b, level="fine") for b in budgets}
    return CompiledContext(
        layers=layers,
        num_tokens=n,
        fingerprint=index.metadata.context_fingerprint,
        thresholds=thresholds,
        head_dim=d,
        num_kv_heads=hkv,
        dtype=dtype,
    )


def check_batch_contexts(contexts) -> CompiledContext:
    """One batch serves one fixed context: every row's context must be the same compiled context.

    Args:
        contexts: a `CompiledContext`, or one per batch row.

    Returns:
        the shared context.
    """
    if isinstance(contexts, CompiledContext):
        return contexts
    rows = list(contexts)
    if not rows or not all(isinstance(c, CompiledContext) for c in rows):
        raise ValueError("contexts must be a CompiledContext or a non-empty list of them (one per batch row)")
    for i, c in enumerate(rows):
        if c is not rows[0]:
            raise ValueError(
                f"batch row {i} uses fixed context {c.fingerprint[:12]} ({c.num_tokens} tokens) but row 0 uses "
                f"{rows[0].fingerprint[:12]} ({rows[0].num_tokens} tokens): one batch serves one compiled context; "
                "split the batch by context"
            )
    return rows[0]


def _flash_fixed(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> AttentionResult:
    """Non-causal attention of ``q [B, Hq, T, D]`` over shared ``k, v [1, Hkv, N, D]`` by PyTorch's flash op.

    The G query heads of a KV group are folded into the query axis (exact without a causal mask), one call per
    batch row (K/V are shared, so nothing is copied)."""
    b, hq, t, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    outs, lses = [], []
    for row in range(b):
        qf = q[row : row + 1].reshape(1, hkv, g * t, d).contiguous()
        res = torch.ops.aten._scaled_dot_product_flash_attention(qf, k, v, 0.0, False, False, scale=scale)
        outs.append(res[0].reshape(1, hq, t, d))
        lses.append(res[1].float().reshape(1, hq, t))
    return AttentionResult(torch.cat(outs), torch.cat(lses))


class StaticLlamaRunner:
    """Prefill + decode of a Llama-family `*ForCausalLM` over a compiled fixed context with static buffers.

    Positions: the fixed context occupies 0 .. N-1, the tail (user input, then generated tokens) N onward. Greedy
    decoding. One runner holds per-sequence tail K/V of ``capacity`` tokens for every layer.

    Args:
        model: Transformers Llama-family causal LM (``model.model.layers[i].self_attn`` etc.).
        context: :class:`CompiledContext` or one per batch row (must be the same one).
        batch_size: B.
        capacity: tail tokens per sequence (user input + generated tokens).
        attention: "squeezed" or "dense".
        rule: :class:`SelectionRule` (squeezed only; calibrated budgets must have been compiled).
        dense_prefill: "triton" or "sdpa_flash" (dense fixed-context part of a prefill; "sdpa_flash" needs CUDA).
        backend: kernel backend ("auto" | "triton" | "reference").
    """

    def __init__(
        self,
        model: nn.Module,
        context,
        *,
        batch_size: int,
        capacity: int,
        attention: str = "squeezed",
        rule: SelectionRule | None = None,
        dense_prefill: str = "triton",
        backend: str = "auto",
    ) -> None:
        self.context = check_batch_contexts(context)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
        if dense_prefill not in DENSE_PREFILL_KINDS:
            raise ValueError(f"dense_prefill must be one of {DENSE_PREFILL_KINDS}, got {dense_prefill!r}")
        cfg = model.config
        hq = cfg.num_attention_heads
        hkv = getattr(cfg, "num_key_value_heads", None) or hq
        d = getattr(cfg, "head_dim", None) or cfg.hidden_size // hq
        param = next(model.parameters())
        check_kernel_support(d, param.dtype, param.device)
        ctx = self.context
        if (len(ctx.layers), hkv, d) != (cfg.num_hidden_layers, ctx.num_kv_heads, ctx.head_dim):
            raise ValueError(
                f"the compiled context has {len(ctx.layers)} layers x {ctx.num_kv_heads} KV heads x head dim "
                f"{ctx.head_dim}, the model {cfg.num_hidden_layers} x {hkv} x {d}"
            )
        if ctx.dtype != param.dtype:
            raise ValueError(f"the compiled context is {ctx.dtype}, the model {param.dtype}: compile with dtype=")
        if ctx.layers[0].k.device != param.device:
            raise ValueError(f"the compiled context is on {ctx.layers[0].k.device}, the model on {param.device}")
        max_pos = getattr(cfg, "max_position_embeddings", None)
        if max_pos is not None and ctx.num_tokens + capacity > max_pos:
            raise ValueError(
                f"fixed context ({ctx.num_tokens}) + capacity ({capacity}) = {ctx.num_tokens + capacity} positions "
                f"exceed the model's max_position_embeddings ({max_pos})"
            )
        if attention == "squeezed":
            if not isinstance(rule, SelectionRule):
                raise ValueError(f"attention='squeezed' needs rule=SelectionRule(...), got {rule!r}")
            if rule.mode == "calibrated" and rule.budget not in ctx.thresholds:
                raise ValueError(
                    f"budget {rule.budget} was not calibrated at compile time (compiled: {sorted(ctx.thresholds)}); "
                    "pass it in compile_fixed_context(budgets=...)"
                )
        if dense_prefill == "sdpa_flash" and param.device.type != "cuda":
            raise ValueError("dense_prefill='sdpa_flash' needs a CUDA model")
        self.model, self.attention, self.rule, self.backend = model, attention, rule, backend
        self.dense_prefill = dense_prefill
        self.batch_size, self.capacity = batch_size, capacity
        self.hq, self.hkv, self.d = hq, hkv, d
        dev, dt = param.device, param.dtype
        self.tail_k = [torch.zeros(batch_size, hkv, capacity, d, dtype=dt, device=dev) for _ in ctx.layers]
        self.tail_v = [torch.zeros_like(t) for t in self.tail_k]
        self.tail_len = torch.zeros(1, dtype=torch.int64, device=dev)  # tokens in the tail (device, for graphs)
        self.next_ids = torch.zeros(batch_size, 1, dtype=torch.int64, device=dev)
        self._tail_indices = (
            torch.arange(capacity, dtype=torch.int32, device=dev).view(1, 1, capacity).expand(batch_size, hkv, capacity)
            .contiguous()
        )
        self._tail_counts = torch.zeros(batch_size, hkv, dtype=torch.int32, device=dev)
        self._host_len = 0  # host mirror of tail_len (advanced without reading the device)
        self.scale = d**-0.5
        # a device tensor: turning a Python float into one inside a captured step would be a host-to-device copy
        self._threshold = None
        if attention == "squeezed" and rule.mode == "calibrated":
            self._threshold = torch.full((hkv,), ctx.thresholds[rule.budget], dtype=torch.float32, device=dev)
        self.last_selection: list[Selection | None] = [None] * len(ctx.layers)
        self.annotate = False

    # ------------------------------------------------------------------------------------------------ attention
    def _fixed_part(self, i: int, q: torch.Tensor) -> AttentionResult:
        layer = self.context.layers[i]
        if self.attention == "dense":
            if q.shape[2] > 1 and self.dense_prefill == "sdpa_flash":
                return _flash_fixed(q, layer.k, layer.v, self.scale)
            return dense_attention(q, layer.k, layer.v, causal=False, scale=self.scale, backend=self.backend)
        return sparse_attention(q, layer.k, layer.v, self._select(i, q), scale=self.scale, backend=self.backend)

    def _select(self, i: int, q: torch.Tensor) -> Selection:
        """Centroid lookup of layer ``i`` (no host sync: threshold as a device tensor, ``sync=False``)."""
        layer = self.context.layers[i]
        rule = self.rule
        pick = {"threshold": self._threshold} if rule.mode == "calibrated" else {"budget": rule.budget}
        sel = centroid_lookup(
            q, layer.centroids, layer.cluster_sizes, layer.layout.key_labels, layout=layer.layout, sync=False,
            scale=self.scale, backend=self.backend, **pick,
        )
        self.last_selection[i] = sel
        return sel

    def _tail_selection(self) -> Selection:
        """Every tail token written so far, this one included (count held on the device)."""
        return Selection(self._tail_indices, self._tail_counts, self._tail_counts[..., :0].float())

    def _tail_part(self, i: int, q: torch.Tensor) -> AttentionResult:
        t = q.shape[2]
        if t == 1:  # decode
            return sparse_attention(q, self.tail_k[i], self.tail_v[i], self._tail_selection(), scale=self.scale,
                                    backend=self.backend)
        # prefill starts from an empty tail: causal attention among the T new tokens
        k, v = self.tail_k[i][:, :, :t], self.tail_v[i][:, :, :t]
        return dense_attention(q, k, v, causal=True, scale=self.scale, backend=self.backend)

    def _attend(self, i: int, q: torch.Tensor) -> torch.Tensor:
        """``[B, Hq, T, D]`` attention of layer ``i``: fixed context ⊕ tail.

        Decode: one split-K partial buffer for both sources and one reduce (`sparse_attention_union`); prefill:
        two attentions merged in one launch."""
        if q.shape[2] == 1:
            layer = self.context.layers[i]
            fixed = (layer.k, layer.v, None if self.attention == "dense" else self._select(i, q))
            tail = (self.tail_k[i], self.tail_v[i], self._tail_selection())
            return sparse_attention_union(q, fixed, tail, scale=self.scale, backend=self.backend).out
        return merge_attention(self._fixed_part(i, q), self._tail_part(i, q), backend=self.backend).out

    # ------------------------------------------------------------------------------------------------ forward
    @staticmethod
    def _norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A Llama RMSNorm as one `torch.nn.functional.rms_norm` call (fused on CUDA in recent torch) instead of the
        module's ~8 elementwise kernels; any other norm module runs as it is."""
        eps = getattr(norm, "variance_epsilon", None)
        if type(norm).__name__ == "LlamaRMSNorm" and eps is not None and hasattr(torch.nn.functional, "rms_norm"):
            return torch.nn.functional.rms_norm(x, (x.shape[-1],), norm.weight, eps)
        return norm(x)

    def _forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Run ``input_ids [B, T]`` at tail positions ``tail_len ..``; returns last-token logits ``[B, V]`` fp32."""
        base = self.model.model
        b, t = input_ids.shape
        write = self.tail_len + torch.arange(t, device=input_ids.device)  # [T] tail slots written now
        positions = (write + self.context.num_tokens).view(1, t).expand(b, t)
        x = base.embed_tokens(input_ids)
        cos, sin = base.rotary_emb(x, positions)
        if t == 1:
            self._tail_counts.copy_((self.tail_len + 1).view(1, 1).expand(b, self.hkv))
        for i, block in enumerate(base.layers):
            attn = block.self_attn
            h = self._norm(block.input_layernorm, x)
            q = attn.q_proj(h).view(b, t, self.hq, self.d)
            k = attn.k_proj(h).view(b, t, self.hkv, self.d)
            v = attn.v_proj(h).view(b, t, self.hkv, self.d)
            # RoPE of q and k, k/v into the tail at `write`, q head-major: one launch
            q = rope_cache_write(q, k, v, cos, sin, write, self.tail_k[i], self.tail_v[i], backend=self.backend)
            if self.annotate:  # a profiler range around the attention (benchmarks measure its share of the step)
                with torch.profiler.record_function(ATTENTION_RANGE):
                    out = self._attend(i, q)
            else:
                out = self._attend(i, q)
            x = x + attn.o_proj(out.transpose(1, 2).reshape(b, t, self.hq * self.d))
            x = x + block.mlp(self._norm(block.post_attention_layernorm, x))
        self.tail_len.add_(t)
        return self.model.lm_head(self._norm(base.norm, x[:, -1:]))[:, 0].float()

    def _check_room(self, tokens: int) -> None:
        if self._host_len + tokens > self.capacity:
            raise ValueError(
                f"{self._host_len} tail tokens + {tokens} more exceed the runner's capacity of {self.capacity} "
                "(user input + generated tokens); build the runner with a larger capacity"
            )

    def check_context(self, context_ids: torch.Tensor) -> None:
        """Raise ValueError unless ``context_ids`` ``[N]`` / ``[1, N]`` / ``[B, N]`` (rows equal) is the compiled context."""
        from framework.models.components.squeezed.fixed_context_index import context_fingerprint

        ids = torch.as_tensor(context_ids)
        if ids.dim() == 2 and ids.shape[0] > 1:
            if not bool((ids == ids[:1]).all()):
                raise ValueError("the batch rows give different fixed contexts; one batch serves one compiled context")
            ids = ids[:1]
        n, have = int(ids.shape[-1]), self.context.num_tokens
        if n != have:
            relation = "longer" if n > have else "shorter"
            raise ValueError(
                f"the given fixed context has {n} tokens, {relation} than the compiled index ({have} tokens): "
                "build and compile an index for this context"
            )
        if context_fingerprint(ids) != self.context.fingerprint:
            raise ValueError(
                f"the given fixed context ({n} tokens) is not the one the index was built from "
                f"(fingerprint {self.context.fingerprint[:12]})"
            )

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, *, context_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Start new sequences: user input ``[B, T]`` after the fixed context. Returns logits ``[B, V]`` of the last
        token and stores its greedy next token in ``next_ids``. With ``context_ids`` the fixed context the caller
        means is checked against the compiled one first (`check_context`)."""
        if context_ids is not None:
            self.check_context(context_ids)
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[0] != self.batch_size:
            shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must have shape [batch_size={self.batch_size}, T], got {shape}")
        t = int(input_ids.shape[1])
        if t < 1:
            raise ValueError("input_ids must hold at least one token")
        self._host_len = 0
        self._check_room(t)
        self.tail_len.zero_()
        logits = self._forward(input_ids.to(self.next_ids.device))
        self._host_len = t
        self.next_ids.copy_(logits.argmax(-1, keepdim=True))
        return logits

    @torch.no_grad()
    def decode_step(self) -> torch.Tensor:
        """Feed ``next_ids`` (one token per sequence), overwrite it with the greedy next token; returns logits."""
        self._check_room(1)
        logits = self._forward(self.next_ids)
        self.next_ids.copy_(logits.argmax(-1, keepdim=True))
        self._host_len += 1
        return logits

    @torch.no_grad()
    def capture_decode(self, warmup: int = 2) -> "CapturedDecode":
        """Capture one decode step in a CUDA graph (after ``warmup`` eager steps, which advance the sequences)."""
        if self.next_ids.device.type != "cuda":
            raise ValueError("CUDA-graph capture needs a CUDA model")
        self._check_room(warmup + 1)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                self.decode_step()
        torch.cuda.current_stream().wait_stream(stream)
        # the captured step must start where an eager step would: save / restore the mutable state around capture
        saved = (self.tail_len.clone(), self.next_ids.clone(), self._host_len)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = self._forward(self.next_ids)
            self.next_ids.copy_(logits.argmax(-1, keepdim=True))
        self.tail_len.copy_(saved[0])
        self.next_ids.copy_(saved[1])
        self._host_len = saved[2]
        return CapturedDecode(self, graph, logits)


@dataclass
class CapturedDecode:
    """A decode step captured in a CUDA graph: ``step()`` replays it (advances every sequence by one token)."""

    runner: StaticLlamaRunner
    graph: "torch.cuda.CUDAGraph"
    logits: torch.Tensor  # [B, V] output buffer of the captured step

    def step(self) -> torch.Tensor:
        self.runner._check_room(1)
        self.graph.replay()
        self.runner._host_len += 1
        return self.logits


def generate_cache_keyword() -> str:
    """The keyword `generate()` takes a prepared cache by in the installed Transformers: ``"cache"`` where
    ``past_key_values`` is a deprecated alias of it (newer releases, which warn on the old name), else
    ``"past_key_values"`` (e.g. 5.17, the GPU image's). Read from the deprecation wrapper around `generate`, so the
    answer follows the installed code rather than a version number guessed here.
    """
    import inspect

    from transformers import GenerationMixin

    func = GenerationMixin.generate
    while func is not None:
        names = inspect.getclosurevars(func).nonlocals if getattr(func, "__closure__", None) else {}
        if names.get("old_name") == "past_key_values" and names.get("new_name") == "cache":
            return "cache"
        func = getattr(func, "__wrapped__", None)
    return "past_key_values"


def static_cache_from_index(index, model: nn.Module, *, batch_size: int, max_cache_len: int):
    """A Transformers `StaticCache` of ``max_cache_len`` positions per sequence holding the index's fixed-context KV.

    For `model.generate(input_ids=context + question, **{generate_cache_keyword(): cache}, ...)` with either "sdpa"
    or (inside `serve`) "squeezed" attention: generation reuses the N cached positions and feeds only the rest. Each
    sequence gets its own copy of the fixed KV (that is how a static cache stores it).
    """
    from transformers import StaticCache

    n = index.metadata.context_length
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if isinstance(max_cache_len, bool) or not isinstance(max_cache_len, int) or max_cache_len <= n:
        raise ValueError(f"max_cache_len must be an int above the fixed context length {n}, got {max_cache_len!r}")
    index.check_model(model)
    cache = StaticCache(config=model.config, max_cache_len=max_cache_len)
    for i, layer in enumerate(index.layers):
        cache.update(layer.keys.expand(batch_size, -1, -1, -1), layer.values.expand(batch_size, -1, -1, -1), i)
    return cache
