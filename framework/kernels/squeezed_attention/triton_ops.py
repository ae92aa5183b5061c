"""Launch wrappers of the Triton kernels (inputs are validated by ``ops.py`` before they get here).

Host work is limited to allocating outputs and choosing grids; nothing waits for the GPU except threshold-mode
selection, which reads the largest key count once to size the index buffer (budget mode knows it in advance, so
the whole budget pipeline can be captured in a CUDA graph).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
import triton

from .results import AttentionResult, ClusterLayout, Selection
from .triton_fused import _fused_lookup_kernel
from .triton_attention import _decode_kernel, _decode_reduce_kernel, _merge_kernel, _prefill_kernel
from .triton_lookup import _logits_kernel, _rows_kernel, _scores_kernel
from .triton_select import (
    _alive_block_kernel,
    _alive_compact_kernel,
    _alive_ids_kernel,
    _budget_search_kernel,
    _take_expand_kernel,
    _expand_layout_kernel,
    _keep_count_kernel,
    _keep_write_kernel,
    _select_kernel,
)
from .validation import budget_to_count, interpreting

LOG2E = 1.4426950408889634
SMALL_ROWS = 64  # up to this many query rows a lookup stores logits; above, it recomputes (prefill)

# Tile choices (GPU); the interpreter uses small tiles to stay fast.
CONFIG = {
    # tuned on an H200 (torch 2.11, Triton 3.6) at 128K, see benchmarks/squeezed_attention_speed.py --tune
    "lookup_block_c": 64,
    "lookup_warps": 4,
    "lookup_stages": 2,
    "rows_block_m": 128,
    "rows_block_c": 128,
    "rows_warps": 8,
    "decode_block_n": 64,
    "decode_warps": 4,
    "decode_stages": 3,
    "decode_prefetch": 1,
    "prefill_block_m": 128,
    "prefill_block_n": 64,
    "prefill_warps": 4,
    "prefill_stages": 3,
    "select_block_c": 4096,
    "select_single_max": 16384,
    "select_warps": 8,
    "select_single_warps": 16,
    "expand_block_p": 1024,
    "expand_block_c": 64,
    "parallel_expand": 1,
    "take_block": 128,
    "take_slots": 512,
    "expand_run": 32,
    "keep_block_k": 1024,
    # decode path: 0 = split launches (logits, scores, budget search, take+expand; split-K attention + reduce),
    # 1 = fused (one lookup launch + take+expand; the reduce inside the attention kernel). See triton_fused.py.
    "fused_decode": 0,
    "fused_lookup_warps": 4,
    # hierarchical first level: 1 = parallel survivor compaction (block counts + prefix), 0 = one serial program
    "parallel_compact": 1,
    "compact_block": 1024,
    # pruned (hierarchical) selections take the parallel take+expand too (0 = the serial select + expand kernels)
    "parallel_expand_alive": 1,
}
_INTERPRET_CONFIG = {
    "lookup_block_c": 16, "rows_block_m": 16, "rows_block_c": 16, "decode_block_n": 16, "prefill_block_m": 16,
    "prefill_block_n": 16, "select_block_c": 32, "select_single_max": 16, "expand_block_p": 32,
    "expand_block_c": 4, "expand_run": 4, "take_block": 4, "take_slots": 8, "keep_block_k": 32,
    "compact_block": 4,
}


def set_decode_path(path: str) -> None:
    """Choose the decode kernels: "split" (the baseline launches) or "fused" (see ``triton_fused.py``)."""
    if path not in DECODE_PATHS:
        raise ValueError(f"decode path must be one of {DECODE_PATHS}, got {path!r}")
    CONFIG["fused_decode"] = int(path == "fused")


def decode_path() -> str:
    return "fused" if CONFIG["fused_decode"] else "split"


DECODE_PATHS = ("split", "fused")
_LOCKS: dict = {}
_RETIRED_LOCKS: list = []


def _lock_buffer(device: torch.device, size: int, tag: str) -> torch.Tensor:
    """Zeroed int32 counters for the last-program-finishes kernels (each launch leaves them at zero again).

    Cached per (device, tag) outside CUDA-graph capture; during a capture a fresh buffer is zeroed inside the graph
    (its memory belongs to the graph's pool and must not outlive it in a cache)."""
    key = (str(device), tag)
    buf = _LOCKS.get(key)
    if buf is not None and buf.numel() >= size:
        return buf[:size]
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return torch.zeros(size, dtype=torch.int32, device=device)
    buf = torch.zeros(max(size, 1024), dtype=torch.int32, device=device)
    if key in _LOCKS:  # a captured CUDA graph may still point at the smaller buffer: keep it alive
        _RETIRED_LOCKS.append(_LOCKS[key])
    _LOCKS[key] = buf
    return buf[:size]


def _cfg(name: str) -> int:
    if interpreting() and name in _INTERPRET_CONFIG:
        return _INTERPRET_CONFIG[name]
    return CONFIG[name]


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


SMEM_PER_SM = 227 * 1024  # Hopper: usable shared memory per SM (bytes)


def _split_count(groups: int, work_tiles: int, device: torch.device, smem_per_program: int, warps: int) -> int:
    """Programs per group so that ``groups * splits`` fills whole waves of resident programs.

    A program count just above a multiple of what the GPU holds at once leaves a nearly empty last wave (seen on
    the H200: 416 decode programs on 396 slots ran ~2 waves); take the fewest splits giving >= 90% wave fill."""
    resident = max(1, min(SMEM_PER_SM // max(1, smem_per_program), 64 // max(1, warps), 32))
    slots = _num_sms(device) * resident
    best, best_fill = 1, 0.0
    for k in (1, 2, 3, 4):
        splits = max(1, min((k * slots) // groups, max(1, work_tiles)))
        progs = groups * splits
        fill = progs / (math.ceil(progs / slots) * slots)
        if fill > best_fill + 1e-9:
            best, best_fill = splits, fill
        if fill >= 0.9:
            break
    return best


def _launch_opts(warps: str, stages: str | None = None) -> dict:
    if interpreting():
        return {}
    opts = {"num_warps": _cfg(warps)}
    if stages is not None:
        opts["num_stages"] = _cfg(stages)
    return opts


# ----------------------------------------------------------------------------------------------------- scores

def cluster_scores(
    q: torch.Tensor,
    centroids: torch.Tensor,
    cluster_sizes: torch.Tensor,
    scale: float,
    ids: torch.Tensor | None = None,
    id_counts: torch.Tensor | None = None,
    defer: bool = False,
    out: torch.Tensor | None = None,
):
    """``[B, Hkv, C]`` fp32 estimated cluster probabilities (only listed clusters when ``ids [B*Hkv, C]`` and
    ``id_counts [B*Hkv]`` are given; the others score 0 and leave the denominator).

    With ``defer`` (few query rows, no id list) the last step is left to the selection kernel, which computes
    the scores from the logits itself: returns ``(scores_buffer, logits_info)`` then (``logits_info`` is None
    when nothing was deferred)."""
    b, hq, t, d = q.shape
    hkv, c, _ = centroids.shape
    g = hq // hkv
    gt = g * t
    dev = q.device
    centroids = centroids.contiguous()
    sizes = cluster_sizes.contiguous()  # int32 or int64, read as is (no conversion launch per call)
    use_ids = ids is not None
    id_cap = c
    ids_t = ids if use_ids else sizes  # placeholder pointer, never read
    cnt_t = id_counts if use_ids else sizes
    qk = scale * LOG2E
    # with an id list only listed clusters are written, the rest must read 0 (``out`` arrives with them zeroed)
    if out is not None:
        scores = out
    else:
        scores = (torch.zeros if use_ids else torch.empty)(b * hkv, c, dtype=torch.float32, device=dev)
    all_batches = (not use_ids) and b * gt <= SMALL_ROWS
    if all_batches or gt <= SMALL_ROWS:
        rows = b * gt if all_batches else gt
        nprog = hkv if all_batches else b * hkv
        block_r = max(16, triton.next_power_of_2(rows))
        block_c = _cfg("lookup_block_c")
        ns = _split_count(nprog, triton.cdiv(c, block_c), dev,
                          _cfg("lookup_stages") * block_c * d * centroids.element_size(), _cfg("lookup_warps"))
        logits = torch.empty(nprog, rows, c, dtype=torch.float32, device=dev)
        pm = torch.empty(nprog, ns, rows, dtype=torch.float32, device=dev)
        pl = torch.empty_like(pm)
        ieee = centroids.dtype == torch.float32
        _logits_kernel[(ns, nprog)](
            q, centroids, sizes, ids_t, cnt_t, logits, pm, pl,
            qk, rows, gt, g, t, c, hkv, id_cap, c,
            q.stride(0), q.stride(1), q.stride(2), centroids.stride(0), centroids.stride(1), sizes.stride(0),
            NS=ns, D=d, BLOCK_R=block_r, BLOCK_C=block_c, USE_IDS=use_ids, ALL_BATCHES=all_batches, IEEE=ieee,
            **_launch_opts("lookup_warps", "lookup_stages"),
        )
        if defer and not use_ids:
            info = {"logits": logits, "pm": pm, "pl": pl, "sizes": sizes, "rows": rows, "gt": gt, "ns": ns,
                    "all_batches": all_batches}
            return scores.view(b, hkv, c), info
        block_c2 = 128 if not interpreting() else 16
        _scores_kernel[(triton.cdiv(c, block_c2), b * hkv)](
            logits, pm, pl, sizes, ids_t, cnt_t, scores,
            rows, gt, c, hkv, id_cap, c, sizes.stride(0),
            NS=ns, BLOCK_NS=max(2, triton.next_power_of_2(ns)), BLOCK_GT=max(2, triton.next_power_of_2(gt)),
            BLOCK_C=block_c2, USE_IDS=use_ids, ALL_BATCHES=all_batches,
            **({} if interpreting() else {"num_warps": 4}),
        )
        out = scores.view(b, hkv, c)
        return (out, None) if defer else out
    # fp32 operands (index build scores float keys) need half the tile of bf16 to fit Hopper's 227 KB of shared
    # memory at head dim 128 with the default pipelining.
    shrink = 2 if (centroids.element_size() >= 4 and not interpreting()) else 1
    block_m = _cfg("rows_block_m") // shrink
    nrb = triton.cdiv(gt, block_m)
    part = (torch.zeros if use_ids else torch.empty)(b * hkv, nrb, c, dtype=torch.float32, device=dev)
    _rows_kernel[(nrb, b * hkv)](
        q, centroids, sizes, ids_t, cnt_t, part,
        qk, gt, g, t, c, hkv, id_cap, c, nrb,
        q.stride(0), q.stride(1), q.stride(2), centroids.stride(0), centroids.stride(1), sizes.stride(0),
        D=d, BLOCK_M=block_m, BLOCK_C=_cfg("rows_block_c") // shrink, USE_IDS=use_ids,
        **_launch_opts("rows_warps"),
    )
    summed = part.sum(1) / gt  # [B*Hkv, C] in slot order
    if use_ids:
        slot_ok = torch.arange(c, device=dev)[None, :] < id_counts[:, None]
        target = torch.where(slot_ok, ids.long(), torch.full_like(ids, c, dtype=torch.long))
        spread = torch.zeros(b * hkv, c + 1, dtype=torch.float32, device=dev)
        summed = spread.scatter_(1, target, summed)[:, :c]  # unlisted (dead) clusters score 0
    nonempty = (sizes > 0).repeat(b, 1)
    out = torch.where(nonempty, summed, torch.zeros_like(summed)).view(b, hkv, c)
    return (out, None) if defer else out


# -------------------------------------------------------------------------------------------------- selection

class _StaticIndex:
    """Per-index data that depends only on labels / always_keep (cached across calls)."""

    def __init__(self, labels: torch.Tensor, always: torch.Tensor | None, c: int, layout: ClusterLayout | None):
        h, n = labels.shape
        dev = labels.device
        self.krest: dict[int, torch.Tensor] = {}  # budget count -> [H] keys left after the always-kept ones
        self.labels = labels.to(torch.int32).contiguous()
        if layout is not None:
            self.avail = torch.diff(layout.cluster_offsets.to(dev), dim=1).to(torch.int32).contiguous()
            self.n_always = torch.full((h,), layout.num_always, dtype=torch.int32, device=dev)
            self.max_always = layout.num_always
            self.offsets = layout.cluster_offsets.to(dev).contiguous()
            self.rank = None
            self.always = None
            return
        alw = torch.zeros(h, n, dtype=torch.bool, device=dev) if always is None else always.to(dev).expand(h, n)
        lab = labels.long()
        sort_label = torch.where(alw, torch.full_like(lab, c), lab)
        counts = torch.zeros(h, c + 1, dtype=torch.long, device=dev).scatter_add_(1, sort_label, torch.ones_like(lab))
        self.avail = counts[:, :c].to(torch.int32).contiguous()
        n_always = alw.sum(1)
        self.n_always = n_always.to(torch.int32)
        self.max_always = int(n_always.max().item())
        order = torch.argsort(sort_label, dim=1, stable=True)
        starts = torch.cumsum(counts, dim=1) - counts
        rank_sorted = torch.arange(n, device=dev).expand(h, n) - starts.gather(1, sort_label.gather(1, order))
        rank = torch.empty_like(rank_sorted).scatter_(1, order, rank_sorted)
        self.rank = torch.where(alw, torch.full_like(rank, n), rank).to(torch.int32).contiguous()
        self.always = alw.to(torch.int8).contiguous() if always is not None else None
        self.offsets = None


_STATIC_CACHE: "OrderedDict[tuple, tuple[tuple, _StaticIndex]]" = OrderedDict()
_STATIC_CACHE_SIZE = 256  # one entry per (layer, index): a 32-layer model must not evict every step


def _static_index(labels, always, c, layout) -> _StaticIndex:
    """Cached per-index data. The cache holds the source tensors themselves (so their storage cannot be freed and
    reused by another tensor) and checks identity and in-place version counters."""
    sources = (labels, always, None if layout is None else layout.cluster_offsets)
    key = tuple(None if x is None else id(x) for x in sources) + (c,)
    versions = tuple(None if x is None else x._version for x in sources)
    hit = _STATIC_CACHE.get(key)
    if hit is not None:
        held, entry = hit
        if all(a is b for a, b in zip(held[0], sources)) and held[1] == versions:
            _STATIC_CACHE.move_to_end(key)
            return entry
    entry = _StaticIndex(labels, always, c, layout)
    _STATIC_CACHE[key] = ((sources, versions), entry)
    _STATIC_CACHE.move_to_end(key)
    while len(_STATIC_CACHE) > _STATIC_CACHE_SIZE:
        _STATIC_CACHE.popitem(last=False)
    return entry


def select_from_scores(
    scores: torch.Tensor,
    key_labels: torch.Tensor,
    *,
    threshold=None,
    budget=None,
    always_keep=None,
    layout: ClusterLayout | None = None,
    alive: torch.Tensor | None = None,
    logits_info: dict | None = None,
    sync: bool = True,
    fused: dict | None = None,
) -> Selection:
    """Selection from ``scores [B, Hkv, C]`` (semantics in ``reference.py``); ``alive [B*Hkv, C]`` int8.

    With ``logits_info`` (from ``cluster_scores(defer=True)``) ``scores`` is an unwritten buffer: the scores
    kernel fills it first (in the parallel path together with the per-block key sums of threshold mode). With
    ``fused = {"q", "centroids", "sizes", "scale"}`` (decode, layout path) ``scores`` is unwritten too and one
    ``_fused_lookup_kernel`` launch computes scores, the cut and the block sums before the parallel expansion."""
    b, hkv, c = scores.shape
    n = key_labels.shape[1]
    dev = scores.device
    st = _static_index(key_labels.to(dev), always_keep, c, layout)
    bh = b * hkv
    flat = scores.reshape(bh, c).contiguous()
    take = torch.empty(bh, c, dtype=torch.int32, device=dev)
    tstart = torch.empty(bh, c + 1, dtype=torch.int32, device=dev)
    counts = torch.empty(bh, dtype=torch.int32, device=dev)
    budget_mode = budget is not None
    if budget_mode:
        k_total = budget_to_count(budget, n)
        krest = st.krest.get(k_total)
        if krest is None:
            krest = st.krest[k_total] = (k_total - st.n_always).clamp(min=0).to(torch.int32)
        thr = krest  # placeholder pointer
        k_cap = max(k_total, st.max_always)
    else:
        thr = torch.as_tensor(threshold, dtype=torch.float32, device=dev).expand(hkv).contiguous()
        krest = st.n_always
    has_alive = alive is not None
    single = triton.next_power_of_2(c) <= _cfg("select_single_max")
    li = logits_info
    alive_t = alive if has_alive else take
    if (st.offsets is not None and (budget_mode or not sync) and _cfg("parallel_expand")
            and (not has_alive or _cfg("parallel_expand_alive"))):
        # everything sized in advance: parallel take + expansion (budget mode keeps one serial search kernel)
        block = _cfg("take_block")
        nblk = triton.cdiv(c, block)
        bsum = torch.empty(bh, nblk, 2, dtype=torch.int32, device=dev)
        search = torch.empty(bh, 2, dtype=torch.int32, device=dev)
        if fused is not None:
            _fused_lookup(fused, flat, st, thr, krest, search, bsum, nblk, block, budget_mode, single, b, hkv, c)
        elif li is not None:
            _finish_scores(li, flat, b, hkv, c, block_c=block,
                           block_sums=None if budget_mode else (thr, st.avail, bsum, nblk))
        elif not budget_mode:  # scores came from the prefill / hierarchical path: block sums in torch
            above = flat > thr.repeat(b)[:, None]
            if has_alive:
                above = above & (alive != 0)
            kept = torch.where(above, st.avail.repeat(b, 1), torch.zeros_like(st.avail[:1]))
            bsum[:, :, 0] = F.pad(kept, (0, nblk * block - c)).view(bh, nblk, block).sum(-1)
            bsum[:, :, 1] = 0
        if budget_mode and fused is None:
            sblock = triton.next_power_of_2(c) if single else _cfg("select_block_c")
            _budget_search_kernel[(bh,)](
                flat, alive_t, st.avail, krest, search, bsum, c, hkv, nblk,
                HAS_ALIVE=has_alive, SINGLE=single, BLOCK_C=max(sblock, block), SUM_BLOCK=block,
                **({} if interpreting() else {"num_warps": _cfg("select_single_warps") if single
                                              else _cfg("select_warps")}),
            )
        k_cap = max(k_cap if budget_mode else n, 1)
        idx = torch.empty(bh, k_cap, dtype=torch.int32, device=dev)
        nb_pad = 1 if budget_mode else 16
        _take_expand_kernel[(nblk + nb_pad, bh)](
            flat, alive_t, st.avail, thr, search, st.offsets, st.n_always, tstart, counts, idx, bsum,
            c, hkv, k_cap, nblk, nb_pad,
            BUDGET=budget_mode, HAS_ALIVE=has_alive, BLOCK=block, SLOTS=_cfg("take_slots"),
            NITER=int(math.ceil(math.log2(block))) + 1, BLOCK_P=_cfg("expand_block_p"),
            BLOCK_NB=max(2, triton.next_power_of_2(nblk)),
            **({} if interpreting() else {"num_warps": 4}),
        )
        return Selection(idx.view(b, hkv, k_cap), counts.view(b, hkv), scores)
    if li is not None:
        _finish_scores(li, flat, b, hkv, c)
    _select_kernel[(bh,)](
        flat, alive_t, st.avail, thr, krest, st.n_always, take, tstart, counts,
        c, hkv,
        BUDGET=budget_mode, HAS_ALIVE=has_alive, SINGLE=single,
        BLOCK_C=triton.next_power_of_2(c) if single else _cfg("select_block_c"),
        **({} if interpreting() else {"num_warps": _cfg("select_single_warps") if single else _cfg("select_warps")}),
    )
    if not budget_mode:
        # threshold mode: counts are data dependent; size the buffer exactly (one host sync) or for all N keys
        k_cap = int(counts.max().item()) if sync else n
    k_cap = max(k_cap, 1)
    if st.offsets is not None:
        idx = torch.empty(bh, k_cap, dtype=torch.int32, device=dev)
        block_c = _cfg("expand_block_c")
        nb_c = triton.cdiv(c, block_c)
        nb_pad = 1 if budget_mode or sync else 16  # padding up to N without a sync: spread it
        _expand_layout_kernel[(nb_c + nb_pad, bh)](
            take, tstart, st.offsets, counts, idx, c, hkv, k_cap, nb_c, nb_pad,
            BLOCK_C=block_c, RUN=_cfg("expand_run"), BLOCK_P=_cfg("expand_block_p"),
            **({} if interpreting() else {"num_warps": 4}),
        )
    else:
        idx = torch.zeros(bh, k_cap, dtype=torch.int32, device=dev)
        block_k = _cfg("keep_block_k")
        nb = triton.cdiv(n, block_k)
        bcnt = torch.empty(bh, nb, dtype=torch.int32, device=dev)
        has_always = st.always is not None
        alw = st.always if has_always else st.rank
        _keep_count_kernel[(nb, bh)](
            st.labels, alw, st.rank, take, bcnt, c, n, hkv, nb,
            HAS_ALWAYS=has_always, BLOCK_K=block_k, **({} if interpreting() else {"num_warps": 4}),
        )
        _keep_write_kernel[(nb, bh)](
            st.labels, alw, st.rank, take, bcnt, idx, c, n, hkv, nb, k_cap,
            HAS_ALWAYS=has_always, BLOCK_K=block_k, BLOCK_NB=max(2, triton.next_power_of_2(nb)),
            **({} if interpreting() else {"num_warps": 4}),
        )
    return Selection(idx.view(b, hkv, k_cap), counts.view(b, hkv), scores)


def _fused_lookup(fused: dict, flat, st, thr, krest, search, bsum, nblk: int, block: int, budget_mode: bool,
                  single: bool, b: int, hkv: int, c: int) -> None:
    """One ``_fused_lookup_kernel`` launch: logits, scores into ``flat``, block sums and (budget) the cut."""
    q, centroids, sizes = fused["q"], fused["centroids"].contiguous(), fused["sizes"].contiguous()
    _, hq, t, d = q.shape
    g = hq // hkv
    rows = g * t
    bh = b * hkv
    dev = q.device
    block_c = _cfg("lookup_block_c")
    ns = _split_count(bh, triton.cdiv(c, block_c), dev,
                      _cfg("lookup_stages") * block_c * d * centroids.element_size(), _cfg("fused_lookup_warps"))
    logits = torch.empty(bh, rows, c, dtype=torch.float32, device=dev)
    pm = torch.empty(bh, ns, rows, dtype=torch.float32, device=dev)
    pl = torch.empty_like(pm)
    search_block = max(triton.next_power_of_2(c) if single else _cfg("select_block_c"), block)
    _fused_lookup_kernel[(ns, bh)](
        q, centroids, sizes, logits, pm, pl, _lock_buffer(dev, bh, "lookup"),
        flat, st.avail, thr, krest, search, bsum,
        fused["scale"] * LOG2E, rows, g, t, c, hkv, nblk,
        q.stride(0), q.stride(1), q.stride(2), centroids.stride(0), centroids.stride(1), sizes.stride(0),
        NS=ns, D=d, BLOCK_R=max(16, triton.next_power_of_2(rows)), BLOCK_C=block_c,
        IEEE=centroids.dtype == torch.float32, BUDGET=budget_mode, BLOCK_NS=max(2, triton.next_power_of_2(ns)),
        BLOCK_GT=max(2, triton.next_power_of_2(rows)), SUM_BLOCK=block, SEARCH_BLOCK=search_block, SINGLE=single,
        **({} if interpreting() else {"num_warps": _cfg("fused_lookup_warps"), "num_stages": _cfg("lookup_stages")}),
    )


def _finish_scores(li: dict, flat: torch.Tensor, b: int, hkv: int, c: int, block_c: int | None = None,
                   block_sums=None) -> None:
    """Run the standalone scores kernel for deferred logits (``flat [B*Hkv, C]`` receives the scores); with
    ``block_sums = (thr, avail, bsum, nblk)`` it also writes the threshold-mode keys per block of ``block_c``."""
    block_c2 = block_c or (128 if not interpreting() else 16)
    extra = {}
    if block_sums is not None:
        thr, avail, bsum, nblk = block_sums
        extra = dict(BLOCK_SUMS=True, thr_ptr=thr, avail_ptr=avail, bsum_ptr=bsum, NBLK=nblk)
    _scores_kernel[(triton.cdiv(c, block_c2), b * hkv)](
        li["logits"], li["pm"], li["pl"], li["sizes"], li["sizes"], li["sizes"], flat,
        li["rows"], li["gt"], c, hkv, c, c, li["sizes"].stride(0),
        NS=li["ns"], BLOCK_NS=max(2, triton.next_power_of_2(li["ns"])),
        BLOCK_GT=max(2, triton.next_power_of_2(li["gt"])), BLOCK_C=block_c2, USE_IDS=False,
        ALL_BATCHES=li["all_batches"], **extra, **({} if interpreting() else {"num_warps": 4}),
    )


def centroid_lookup(q, centroids, cluster_sizes, key_labels, *, threshold, budget, always_keep, scale, layout,
                    sync=True):
    b, hq, t, _ = q.shape
    hkv, c, _ = centroids.shape
    if (CONFIG["fused_decode"] and layout is not None and (budget is not None or not sync)
            and (hq // hkv) * t <= SMALL_ROWS and _cfg("parallel_expand")):
        scores = torch.empty(b, hkv, c, dtype=torch.float32, device=q.device)
        return select_from_scores(
            scores, key_labels, threshold=threshold, budget=budget, always_keep=always_keep, layout=layout,
            sync=sync, fused={"q": q, "centroids": centroids, "sizes": cluster_sizes, "scale": scale},
        )
    scores, info = cluster_scores(q, centroids, cluster_sizes, scale, defer=True)
    return select_from_scores(
        scores, key_labels, threshold=threshold, budget=budget, always_keep=always_keep, layout=layout,
        logits_info=info, sync=sync,
    )


def hierarchical_lookup(
    q, coarse_centroids, coarse_sizes, fine_to_coarse, fine_centroids, fine_sizes, key_labels, *,
    coarse_threshold, threshold, budget, always_keep, scale, layout, sync=True,
):
    b = q.shape[0]
    hkv, c1, _ = coarse_centroids.shape
    c2 = fine_centroids.shape[1]
    dev = q.device
    coarse, info = cluster_scores(q, coarse_centroids, coarse_sizes, scale, defer=True)
    bh = b * hkv
    flags = torch.empty(bh, c2, dtype=torch.int8, device=dev)
    ids = torch.empty(bh, c2, dtype=torch.int32, device=dev)
    id_counts = torch.empty(bh, dtype=torch.int32, device=dev)
    fine_scores = torch.empty(bh, c2, dtype=torch.float32, device=dev)  # dead clusters zeroed by the compaction
    cthr = torch.as_tensor(coarse_threshold, dtype=torch.float32, device=dev).expand(hkv).contiguous()
    li = info or {"logits": coarse, "pm": coarse, "pl": coarse, "sizes": coarse_sizes, "rows": 1, "gt": 1,
                  "ns": 1, "all_batches": False}
    coarse_args = (li["logits"], li["pm"], li["pl"], li["sizes"], li["sizes"].stride(0), li["rows"], li["gt"],
                   li["ns"], c1, c1, c2, hkv)
    coarse_meta = dict(FROM_LOGITS=info is not None, ALL_BATCHES=li["all_batches"],
                       BLOCK_NS=max(2, triton.next_power_of_2(li["ns"])),
                       BLOCK_GT=max(2, triton.next_power_of_2(li["gt"])))
    f2c = fine_to_coarse.contiguous()
    if _cfg("parallel_compact"):
        block = _cfg("compact_block")
        nblk = triton.cdiv(c2, block)
        bcnt = torch.empty(bh, nblk, dtype=torch.int32, device=dev)
        _alive_block_kernel[(nblk, bh)](
            coarse.reshape(bh, c1), f2c, cthr, flags, bcnt, fine_scores, *coarse_args, nblk,
            BLOCK=block, **coarse_meta, **({} if interpreting() else {"num_warps": 4}),
        )
        _alive_ids_kernel[(nblk, bh)](
            flags, bcnt, ids, id_counts, c2, nblk, BLOCK=block, BLOCK_NB=max(2, triton.next_power_of_2(nblk)),
            **({} if interpreting() else {"num_warps": 4}),
        )
    else:
        _alive_compact_kernel[(bh,)](
            coarse.reshape(bh, c1), f2c, cthr, flags, ids, id_counts, fine_scores, *coarse_args,
            BLOCK=_cfg("select_block_c"), **coarse_meta, **_launch_opts("select_warps"),
        )
    fine = cluster_scores(q, fine_centroids, fine_sizes, scale, ids=ids, id_counts=id_counts, out=fine_scores)
    return select_from_scores(
        fine, key_labels, threshold=threshold, budget=budget, always_keep=always_keep, layout=layout, alive=flags,
        sync=sync,
    )


# -------------------------------------------------------------------------------------------------- attention

def _decode(q, k, v, idx, counts, k_cap, scale, dense: bool, extra=None) -> AttentionResult:
    """Split-K decode over ``k, v`` (selected by ``idx``/``counts`` unless ``dense``); with ``extra = (k2, v2, idx2,
    counts2, k_cap2)`` a second launch attends a second, disjoint key source into the same partial buffer and the
    one reduce merges both."""
    b, hq, _, d = q.shape
    hkv, n = k.shape[1], k.shape[2]
    g = hq // hkv
    dev = q.device
    block_g = max(16, triton.next_power_of_2(g))
    block_n = _cfg("decode_block_n")
    expected = n if dense else k_cap
    tile_bytes = 2 * block_n * d * k.element_size()  # one K and one V tile
    nsplit = _split_count(b * hkv, triton.cdiv(expected, block_n), dev, _cfg("decode_stages") * tile_bytes,
                          _cfg("decode_warps"))
    sources = [(k, v, idx, counts, k_cap, n, dense, nsplit)]
    if extra is not None:
        k2, v2, idx2, counts2, k_cap2 = extra
        # the tail is short: few splits (enough programs come from the first source)
        ns2 = max(1, min(4, triton.cdiv(k_cap2, block_n)))
        sources.append((k2, v2, idx2, counts2, k_cap2, k2.shape[2], False, ns2))
    ns_total = sum(src[-1] for src in sources)
    po = torch.empty(b * hkv * ns_total * block_g, d, dtype=torch.float32, device=dev)
    pl = torch.empty(b * hkv * ns_total * block_g, dtype=torch.float32, device=dev)
    out = torch.empty(b, hq, 1, d, dtype=q.dtype, device=dev)
    lse = torch.empty(b, hq, 1, dtype=torch.float32, device=dev)
    fused = dict(FUSED_REDUCE=True, lock_ptr=_lock_buffer(dev, b * hkv, "decode"), o_ptr=out, lse_ptr=lse,
                 sob=out.stride(0), soh=out.stride(1), slb=lse.stride(0), slh=lse.stride(1)) \
        if CONFIG["fused_decode"] else {}
    split0 = 0
    for kk, vv, ii, cc, cap, nn, dd, ns in sources:
        skb = 0 if kk.shape[0] == 1 else kk.stride(0)
        svb = 0 if vv.shape[0] == 1 else vv.stride(0)
        _decode_kernel[(ns, b * hkv)](
            q, kk, vv, ii, cc, po, pl,
            scale * LOG2E, hkv, g, nn, cap,
            q.stride(0), q.stride(1), skb, kk.stride(1), kk.stride(2), svb, vv.stride(1), vv.stride(2),
            ns, ns_total, split0,
            D=d, BLOCK_G=block_g, BLOCK_N=block_n, DENSE=dd, PREFETCH=bool(_cfg("decode_prefetch")),
            **fused, **_launch_opts("decode_warps", "decode_stages"),
        )
        split0 += ns
    if fused:
        return AttentionResult(out, lse)
    _decode_reduce_kernel[(b * hq,)](
        po, pl, out, lse, hkv, g,
        out.stride(0), out.stride(1), lse.stride(0), lse.stride(1),
        NSPLIT=ns_total, BLOCK_S=max(2, triton.next_power_of_2(ns_total)), D=d, BLOCK_G=block_g,
        **({} if interpreting() else {"num_warps": 4}),
    )
    return AttentionResult(out, lse)


def _prefill(q, k, v, idx, counts, k_cap, scale, dense: bool, causal: bool) -> AttentionResult:
    b, hq, t, d = q.shape
    hkv, n = k.shape[1], k.shape[2]
    g = hq // hkv
    dev = q.device
    out = torch.empty(b, hq, t, d, dtype=q.dtype, device=dev)
    lse = torch.empty(b, hq, t, dtype=torch.float32, device=dev)
    block_m = _cfg("prefill_block_m")
    block_n = _cfg("prefill_block_n")
    if not interpreting() and d > 128:
        block_n = 32
    skb = 0 if k.shape[0] == 1 else k.stride(0)
    svb = 0 if v.shape[0] == 1 else v.stride(0)
    _prefill_kernel[(triton.cdiv(t * g, block_m), b * hkv)](
        q, k, v, idx, counts, out, lse,
        scale * LOG2E, hkv, g, t, n, k_cap,
        q.stride(0), q.stride(1), q.stride(2), skb, k.stride(1), k.stride(2), svb, v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2), lse.stride(0), lse.stride(1),
        D=d, BLOCK_M=block_m, BLOCK_N=block_n, DENSE=dense, CAUSAL=causal,
        **_launch_opts("prefill_warps", "prefill_stages"),
    )
    return AttentionResult(out, lse)


def _kv_ready(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def sparse_attention(q, k, v, selection: Selection, *, scale: float) -> AttentionResult:
    q, k, v = _kv_ready(q), _kv_ready(k), _kv_ready(v)
    b, hkv = selection.key_counts.shape
    k_cap = selection.key_indices.shape[-1]
    idx = selection.key_indices.to(torch.int32).reshape(b * hkv, k_cap).contiguous()
    counts = selection.key_counts.to(torch.int32).reshape(-1).contiguous()
    if q.shape[2] == 1:
        return _decode(q, k, v, idx, counts, k_cap, scale, dense=False)
    return _prefill(q, k, v, idx, counts, k_cap, scale, dense=False, causal=False)


def sparse_attention_union(q, first, second, *, scale: float) -> AttentionResult:
    """Decode (T == 1) over two disjoint key sources ``(k, v, selection)``: two attention launches into one partial
    buffer and one reduce, instead of two full decodes and a merge (5 launches)."""
    srcs = []
    for k, v, sel in (first, second):
        k, v = _kv_ready(k), _kv_ready(v)
        if sel is None:  # every key of this source (dense)
            dummy = torch.zeros(1, dtype=torch.int32, device=q.device)
            srcs.append((k, v, dummy, dummy, 1))
            continue
        b, hkv = sel.key_counts.shape
        cap = sel.key_indices.shape[-1]
        idx = sel.key_indices.to(torch.int32).reshape(b * hkv, cap).contiguous()
        cnt = sel.key_counts.to(torch.int32).reshape(-1).contiguous()
        srcs.append((k, v, idx, cnt, cap))
    q = _kv_ready(q)
    (k1, v1, i1, c1, cap1), second_src = srcs
    return _decode(q, k1, v1, i1, c1, cap1, scale, dense=first[2] is None, extra=second_src)


def dense_attention(q, k, v, *, causal: bool, scale: float) -> AttentionResult:
    q, k, v = _kv_ready(q), _kv_ready(k), _kv_ready(v)
    dummy = torch.zeros(1, dtype=torch.int32, device=q.device)
    t = q.shape[2]
    if t == 1:  # a single query sees every key, causal or not
        return _decode(q, k, v, dummy, dummy, 1, scale, dense=True)
    return _prefill(q, k, v, dummy, dummy, 1, scale, dense=True, causal=causal)


def merge_attention(a: AttentionResult, b: AttentionResult) -> AttentionResult:
    """One-launch log-sum-exp merge (``_merge_kernel``); shapes were checked by ``ops.merge_attention``."""
    oa, ob = a.out.contiguous(), b.out.contiguous()
    la, lb = a.lse.float().contiguous(), b.lse.float().contiguous()
    d = oa.shape[-1]
    rows = la.numel()
    out = torch.empty_like(oa)
    lse = torch.empty_like(la)
    block_r = 16 if interpreting() else max(1, min(64, 4096 // d))
    _merge_kernel[(triton.cdiv(rows, block_r),)](
        oa, la, ob, lb, out, lse, rows, D=d, BLOCK_R=block_r, **({} if interpreting() else {"num_warps": 4}),
    )
    return AttentionResult(out, lse)
