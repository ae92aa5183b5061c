"""Squeezed Attention kernel speed on one GPU: lookup + sparse attention vs dense attention over a fixed context.

Usage::

    python benchmarks/squeezed_attention_speed.py [--quick] [--out FILE.json]

Needs torch and triton only. bf16, head dim 128, 32 query heads with 32 (MHA) and 8 (GQA) KV heads. Per
configuration it times (GPU-side: each op captured in a CUDA graph, L2 flushed before every replay, median):
- dense: PyTorch SDPA with the flash backend (the faster of ``enable_gqa=True`` and folding the query group into
  the query axis, which is exact without a causal mask) and, for decode, our dense split-K kernel; the faster
  counts as the baseline;
- ours: the lookup (centroid scores + budget selection + index expansion), the sparse attention over the selected
  keys, and the whole pipeline captured as one graph ("total").
The fixed context is stored cluster-contiguously (``cluster_contiguous_layout``), 5% centroids (bf16), budget
selection (exact K = budget * N keys, observation window of 100 keys included). Random keys with uniform random
cluster labels (clusters of ~20 keys), a fresh context per sequence of the batch. Prefill times the fixed-context
part only (the causal attention among user tokens is the same for both and excluded).
Effective bandwidth = bytes of K, V and centroids that must be read / time, against the H200's 4.8 TB/s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from framework.kernels.squeezed_attention import (  # noqa: E402
    ClusterLayout,
    centroid_lookup,
    dense_attention,
    hierarchical_lookup,
    sparse_attention,
)
from framework.kernels.squeezed_attention import reference as ref  # noqa: E402
from framework.atomic_files import write_json_atomic  # noqa: E402  (standard library only)

BACKEND = "auto"  # "triton" with --smoke (CPU tensors would otherwise take the PyTorch reference)
DEVICE = "cuda"  # "cpu" only for --smoke (Triton interpreter, tiny sizes: checks the script, times nothing real)
PEAK_BW = 4.8e12
COPY_BW: float | None = None  # device-to-device copy bandwidth measured at start (bytes/s), for the byte floors
HQ, D = 32, 128
WINDOW = 100
DT = torch.bfloat16


# ---------------------------------------------------------------------------------------------------- timing

class Timer:
    """GPU-side time of a callable: CUDA-graph replay, L2 flushed before each replay, median of ``reps``."""

    def __init__(self, reps: int):
        self.reps = reps
        self.flush = torch.empty(256 * 1024 * 1024 if DEVICE == "cuda" else 1, dtype=torch.int8, device=DEVICE)

    def __call__(self, fn) -> float:
        if DEVICE == "cpu":  # --smoke: one eager call (the interpreter's time means nothing)
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1e6
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
        graph = None
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                fn()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            run = graph.replay
        except Exception as exc:  # noqa: BLE001 - fall back to eager timing, reported
            print(f"  (graph capture failed: {type(exc).__name__}: {exc}; timing eagerly)", flush=True)
            torch.cuda.synchronize()
            run = fn
        run()
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(self.reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(self.reps)]
        for s, e in zip(starts, ends):
            self.flush.zero_()
            s.record()
            run()
            e.record()
        torch.cuda.synchronize()
        times = [s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)]  # us
        del graph
        return statistics.median(times)


# ---------------------------------------------------------------------------------------------------- inputs

def make_context(b: int, hkv: int, n: int, frac: float, seed: int):
    """Random fixed context in cluster-contiguous layout; the last WINDOW keys are the always-kept window."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    k = torch.randn(b, hkv, n, D, generator=g, device=DEVICE, dtype=DT)
    v = torch.randn(b, hkv, n, D, generator=g, device=DEVICE, dtype=DT)
    nc = n - WINDOW
    c = max(1, int(frac * nc))
    labels = torch.randint(0, c, (hkv, nc), generator=g, device=DEVICE).sort(dim=1).values
    sizes = torch.zeros(hkv, c, dtype=torch.long, device=DEVICE).scatter_add_(1, labels, torch.ones_like(labels))
    labels_all = torch.cat([labels, torch.zeros(hkv, WINDOW, dtype=torch.long, device=DEVICE)], 1)
    offsets = torch.zeros(hkv, c + 1, dtype=torch.int32, device=DEVICE)
    offsets[:, 1:] = sizes.cumsum(1).to(torch.int32)
    always = torch.zeros(hkv, n, dtype=torch.bool, device=DEVICE)
    always[:, nc:] = True
    layout = ClusterLayout(k=k, v=v, key_labels=labels_all, permutation=torch.arange(n, device=DEVICE).expand(hkv, n),
                           cluster_offsets=offsets, always_keep=always, num_always=WINDOW)
    # keys of a cluster scatter around their centroid; centroids are random directions with key-like norms
    cent = torch.randn(hkv, c, D, generator=g, device=DEVICE).to(DT)
    return {"k": k, "v": v, "labels": labels_all, "sizes": sizes, "centroids": cent, "layout": layout, "c": c}


def make_hierarchy(ctx, frac_coarse: float, n: int, seed: int):
    """Coarse level over the fine centroids: fine ids are grouped by coarse parent (sorted map)."""
    hkv, c2 = ctx["sizes"].shape
    c1 = max(1, int(frac_coarse * (n - WINDOW)))
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    f2c = torch.randint(0, c1, (hkv, c2), generator=g, device=DEVICE).sort(dim=1).values
    coarse_sizes = torch.zeros(hkv, c1, dtype=torch.long, device=DEVICE).scatter_add_(1, f2c, ctx["sizes"])
    coarse = torch.randn(hkv, c1, D, generator=g, device=DEVICE).to(DT)
    return {"f2c": f2c, "coarse_sizes": coarse_sizes, "coarse": coarse, "c1": c1}


def sdpa_flash(q, k, v):
    """Fastest exact SDPA flash variant for a non-causal fixed context; returns (callable, name)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b, hq, t, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    variants = {}
    if g == 1:
        variants["flash"] = lambda: F.scaled_dot_product_attention(q, k, v)
    else:
        variants["flash_gqa"] = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        qf = q.reshape(b, hkv, g * t, d)  # exact without a causal mask: the group's queries share K/V
        variants["flash_folded"] = lambda: F.scaled_dot_product_attention(qf, k, v)
    ok = {}
    for name, fn in variants.items():
        try:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                fn()
            ok[name] = fn
        except Exception as exc:  # noqa: BLE001
            print(f"  sdpa {name} unavailable: {type(exc).__name__}: {str(exc)[:120]}", flush=True)

    def wrap(fn):
        def run():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return fn()
        return run

    return {name: wrap(fn) for name, fn in ok.items()}


# ---------------------------------------------------------------------------------------------------- runs

def bench_config(timer, mode, b, hkv, n, t, budgets, ctx, rows, hier=None):
    g_ = torch.Generator(device=DEVICE).manual_seed(n + t + b)
    q = torch.randn(b, HQ, t, D, generator=g_, device=DEVICE, dtype=DT)
    k, v, lay = ctx["k"], ctx["v"], ctx["layout"]
    kv_bytes = 2 * b * hkv * n * D * 2
    cent_bytes = hkv * ctx["c"] * D * 2
    base = {"mode": mode, "batch": b, "kv_heads": hkv, "q_heads": HQ, "context": n, "query_tokens": t,
            "centroids": ctx["c"]}
    dense = {}
    for name, fn in sdpa_flash(q, k, v).items():
        dense["sdpa_" + name] = timer(fn)
    if mode == "decode":
        dense["ours_split_k"] = timer(lambda: dense_attention(q, k, v, causal=False))
    best = min(dense, key=dense.get)
    t_dense = dense[best]
    flops_dense = 4 * b * HQ * t * n * D
    for budget in budgets:
        lookup = lambda: centroid_lookup(q, ctx["centroids"], ctx["sizes"], lay.key_labels, budget=budget,  # noqa
                                         layout=lay)
        sel = lookup()
        kept = sel.key_counts.float().mean().item()
        attn = lambda: sparse_attention(q, k, v, sel)  # noqa: E731
        total = lambda: sparse_attention(q, k, v, lookup())  # noqa: E731
        t_lookup, t_attn, t_total = timer(lookup), timer(attn), timer(total)
        thr = calibrate_thresholds(ctx, b, t, budget, seed=17)
        tlook = lambda: centroid_lookup(q, ctx["centroids"], ctx["sizes"], lay.key_labels,  # noqa: E731
                                        threshold=thr, layout=lay, sync=False)
        tsel = tlook()
        t_kept = tsel.key_counts.float().mean().item()
        t_tl = timer(tlook)
        t_tt = timer(lambda: sparse_attention(q, k, v, tlook()))
        sel_bytes = 2 * b * hkv * kept * D * 2
        row = dict(base, budget=budget, kept_keys=kept, dense_us=t_dense, dense_best=best,
                   dense_all_us=dense, lookup_us=t_lookup, attention_us=t_attn, total_us=t_total,
                   speedup=t_dense / t_total, lookup_share=t_lookup / t_total,
                   dense_tbps=kv_bytes / t_dense / 1e6, attention_tbps=sel_bytes / t_attn / 1e6,
                   lookup_tbps=cent_bytes / t_lookup / 1e6,
                   total_tbps=(sel_bytes + cent_bytes) / t_total / 1e6,
                   thr_kept_keys=t_kept, thr_kept_min=tsel.key_counts.min().item(),
                   thr_kept_max=tsel.key_counts.max().item(), thr_lookup_us=t_tl, thr_total_us=t_tt,
                   thr_speedup=t_dense / t_tt,
                   thr_total_tbps=(2 * b * hkv * t_kept * D * 2 + cent_bytes) / t_tt / 1e6)
        if COPY_BW:  # bytes that must be read, at the copy bandwidth measured on this card in this run
            row.update(copy_tbps=COPY_BW / 1e12, dense_floor_us=kv_bytes / COPY_BW * 1e6,
                       floor_us=(sel_bytes + cent_bytes) / COPY_BW * 1e6,
                       thr_floor_us=(2 * b * hkv * t_kept * D * 2 + cent_bytes) / COPY_BW * 1e6)
        if mode == "prefill":
            row["dense_tflops"] = flops_dense / t_dense / 1e6
            row["attention_tflops"] = 4 * b * HQ * t * kept * D / t_attn / 1e6
        if hier is not None:
            hl = lambda: hierarchical_lookup(  # noqa: E731
                q, hier["coarse"], hier["coarse_sizes"], hier["f2c"], ctx["centroids"], ctx["sizes"],
                lay.key_labels, coarse_threshold=hier["thr"], budget=budget, layout=lay)
            hsel = hl()
            row["hier_coarse_centroids"] = hier["c1"]
            row["hier_kept_keys"] = hsel.key_counts.float().mean().item()
            row["hier_fine_alive"] = (hsel.cluster_scores > 0).float().sum(-1).mean().item()
            row["hier_lookup_us"] = timer(hl)
            row["hier_total_us"] = timer(lambda: sparse_attention(q, k, v, hl()))
            row["hier_speedup"] = t_dense / row["hier_total_us"]
            row["hier_vs_single_lookup"] = t_lookup / row["hier_lookup_us"]
            htl = lambda: hierarchical_lookup(  # noqa: E731
                q, hier["coarse"], hier["coarse_sizes"], hier["f2c"], ctx["centroids"], ctx["sizes"],
                lay.key_labels, coarse_threshold=hier["thr"], threshold=thr, layout=lay, sync=False)
            row["hier_thr_kept_keys"] = htl().key_counts.float().mean().item()
            row["hier_thr_lookup_us"] = timer(htl)
            row["hier_thr_total_us"] = timer(lambda: sparse_attention(q, k, v, htl()))
        rows.append(row)
        print(fmt_row(row), flush=True)


def calibrate_thresholds(ctx, b, t, budget, seed):
    """Per-head score threshold keeping about ``budget`` of the keys for an independent calibration query (the
    paper calibrates on observation-window queries; the test query then keeps a data-dependent fraction)."""
    g_ = torch.Generator(device=DEVICE).manual_seed(seed)
    qc = torch.randn(b, HQ, t, D, generator=g_, device=DEVICE, dtype=DT)
    lay = ctx["layout"]
    sel = centroid_lookup(qc, ctx["centroids"], ctx["sizes"], lay.key_labels, budget=budget,
                          layout=lay)
    scores = sel.cluster_scores  # [B, Hkv, C]
    order = scores.sort(dim=-1, descending=True)
    sizes = ctx["sizes"][None].expand_as(scores).gather(2, order.indices)
    n = lay.key_labels.shape[1]
    need = budget * n - WINDOW
    cut = (sizes.cumsum(-1) < need).sum(-1, keepdim=True).clamp(max=scores.shape[-1] - 1)
    thr = order.values.gather(2, cut).squeeze(-1)  # [B, Hkv]
    return thr.median(dim=0).values.contiguous()


def calibrate_coarse_threshold(ctx, hier, b, t, seed):
    """Per-head median coarse score of an independent calibration query (keeps about half the coarse clusters)."""
    g_ = torch.Generator(device=DEVICE).manual_seed(seed)
    qc = torch.randn(b, HQ, t, D, generator=g_, device=DEVICE, dtype=DT)
    scores = ref.cluster_scores_reference(qc[:, :, : min(t, 64)], hier["coarse"], hier["coarse_sizes"], D ** -0.5)
    return scores.median(dim=-1).values.median(dim=0).values.contiguous()


HEADER = ("| mode | B | Hkv | N | T | budget | dense µs (which) | lookup µs | attention µs | total µs | speedup "
          "| lookup share | dense TB/s | total TB/s | thr. kept | thr. lookup µs | thr. total µs | thr. speedup "
          "| thr. TB/s | hier. lookup µs | hier. total µs |")


def fmt_row(r):
    hier = (f"{r['hier_lookup_us']:.1f} | {r['hier_total_us']:.1f}" if "hier_lookup_us" in r else "– | –")
    return (f"| {r['mode']} | {r['batch']} | {r['kv_heads']} | {r['context'] // 1024}K | {r['query_tokens']} | "
            f"{r['budget']:.0%} | {r['dense_us']:.1f} ({r['dense_best']}) | {r['lookup_us']:.1f} | "
            f"{r['attention_us']:.1f} | {r['total_us']:.1f} | {r['speedup']:.2f}x | {r['lookup_share']:.0%} | "
            f"{r['dense_tbps']:.2f} | {r['total_tbps']:.2f} | {r['thr_kept_keys'] / r['context']:.1%} | "
            f"{r['thr_lookup_us']:.1f} | {r['thr_total_us']:.1f} | {r['thr_speedup']:.2f}x | "
            f"{r['thr_total_tbps']:.2f} | {hier} |")


def plan(quick: bool):
    """(mode, batch, kv_heads, context, query tokens, budgets, with hierarchical)."""
    k = 1024
    if quick:
        out = []
        for hkv in (32, 8):
            for n in (16 * k, 128 * k):
                out.append(("decode", 1, hkv, n, 1, (0.1,), n >= 128 * k))
                out.append(("prefill", 1, hkv, n, 1024, (0.1,), False))
        return out
    out = []
    for hkv in (32, 8):
        for b in (1, 8):
            for n in (16 * k, 32 * k, 64 * k, 128 * k) + ((256 * k, 512 * k) if b == 1 else ()):
                out.append(("decode", b, hkv, n, 1, (0.1, 0.3), b == 1 and n >= 128 * k))
    for hkv in (32, 8):
        for t in (1024, 4096):
            for n in (16 * k, 32 * k, 64 * k, 128 * k) + ((256 * k,) if t == 1024 else ()):
                out.append(("prefill", 1, hkv, n, t, (0.1, 0.3), n >= 128 * k and t == 1024))
    return out


def profile_breakdown(timer):
    """Per-kernel GPU time (torch.profiler) of the 128K decode and prefill pipelines, budget 10%."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for mode, hkv, t, sel_mode in (("decode", 32, 1, "budget"), ("decode", 32, 1, "threshold"),
                                   ("decode", 8, 1, "budget"), ("decode", 8, 1, "threshold"),
                                   ("prefill", 32, 1024, "budget")):
        n = 128 * 1024
        ctx = make_context(1, hkv, n, 0.05, seed=3)
        q = torch.randn(1, HQ, t, D, device=DEVICE, dtype=DT)
        lay = ctx["layout"]
        kw = {"budget": 0.1} if sel_mode == "budget" else {
            "threshold": calibrate_thresholds(ctx, 1, t, 0.1, seed=4), "sync": False}

        def step():
            sel = centroid_lookup(q, ctx["centroids"], ctx["sizes"], lay.key_labels, layout=lay, **kw)
            return sparse_attention(q, ctx["k"], ctx["v"], sel)

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                step()
            torch.cuda.synchronize()
        rows = []
        for ev in prof.key_averages():
            dev_us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
            if dev_us:
                rows.append((ev.key[:60], dev_us / 10, ev.count // 10))
        rows.sort(key=lambda r: -r[1])
        print(f"\nkernel breakdown, {mode} {sel_mode} Hkv={hkv} N=128K T={t} (us per call):")
        for name, us, cnt in rows[:12]:
            print(f"  {us:9.1f}  x{cnt}  {name}")
        out[f"{mode}_{sel_mode}_{hkv}"] = rows[:12]
        del ctx
        torch.cuda.empty_cache()
    return out


def tune(timer):
    """Time tile configurations of the decode / prefill attention and lookup kernels at 128K, budget 10%."""
    from framework.kernels.squeezed_attention import triton_ops

    base = dict(triton_ops.CONFIG)
    results = {}

    def sweep(name, fn, variants):
        res = []
        for var in variants:
            triton_ops.CONFIG.clear()
            triton_ops.CONFIG.update(base)
            triton_ops.CONFIG.update(var)
            try:
                us = timer(fn)
            except Exception as exc:  # noqa: BLE001
                us = float("nan")
                print(f"  {name} {var}: failed {type(exc).__name__}: {str(exc)[:100]}")
            res.append((var, us))
            print(f"  {name} {var}: {us:.1f} us", flush=True)
        results[name] = res
        triton_ops.CONFIG.clear()
        triton_ops.CONFIG.update(base)

    n = 128 * 1024
    dec = [dict(decode_block_n=bn, decode_warps=w, decode_stages=st, decode_prefetch=pf)
           for bn, w, st, pf in ((64, 4, 2, 1), (64, 4, 2, 0), (32, 4, 3, 1), (64, 4, 3, 1), (32, 4, 2, 1))]
    for hkv, b in ((32, 1), (8, 1), (32, 8)):
        ctx = make_context(b, hkv, n, 0.05, seed=5)
        q = torch.randn(b, HQ, 1, D, device=DEVICE, dtype=DT)
        lay = ctx["layout"]
        sel = centroid_lookup(q, ctx["centroids"], ctx["sizes"], lay.key_labels, budget=0.1, layout=lay)
        sweep(f"decode_attention_h{hkv}_b{b}", lambda: sparse_attention(q, ctx["k"], ctx["v"], sel), dec)
        if b == 1:
            thr = calibrate_thresholds(ctx, b, 1, 0.1, seed=11)
            sweep(f"decode_lookup_budget_h{hkv}", lambda: centroid_lookup(
                q, ctx["centroids"], ctx["sizes"], lay.key_labels, budget=0.1, layout=lay),
                [dict(select_single_warps=sw, lookup_block_c=bc) for sw, bc in ((16, 64), (8, 64), (16, 128))])
            sweep(f"decode_lookup_threshold_h{hkv}", lambda: centroid_lookup(
                q, ctx["centroids"], ctx["sizes"], lay.key_labels, threshold=thr, layout=lay, sync=False),
                [dict(lookup_block_c=bc, take_slots=sl) for bc, sl in ((64, 512), (128, 512), (64, 256))])
        del ctx, sel
        torch.cuda.empty_cache()
    return results


# ------------------------------------------------------------------------------------------- issue-23 targets

def _time_paths(timer, q, ctx, budget, thr, paths, row, prefix="", totals_only=False):
    """Lookup / attention / total (budget mode) and lookup / total (threshold mode) under each decode path
    (``totals_only``: the two totals)."""
    from framework.kernels.squeezed_attention import set_decode_path

    lay = ctx["layout"]
    k, v = ctx["k"], ctx["v"]
    want = None
    for path in paths:
        set_decode_path(path)
        look = lambda: centroid_lookup(q, ctx["centroids"], ctx["sizes"], lay.key_labels, budget=budget,  # noqa
                                       layout=lay, backend=BACKEND)
        sel = look()
        counts = sel.key_counts.clone()
        if want is None:
            want = counts
        elif not torch.equal(counts, want):
            raise RuntimeError(f"decode path {path!r} selected other key counts than {paths[0]!r}")
        tlook = lambda: centroid_lookup(q, ctx["centroids"], ctx["sizes"], lay.key_labels, threshold=thr,  # noqa
                                        layout=lay, sync=False, backend=BACKEND)
        key = f"{prefix}{path}_"
        if not totals_only:
            row[key + "lookup_us"] = timer(look)
            row[key + "attention_us"] = timer(lambda: sparse_attention(q, k, v, sel, backend=BACKEND))
            row[key + "thr_kept_keys"] = tlook().key_counts.float().mean().item()
            row[key + "thr_lookup_us"] = timer(tlook)
        row[key + "total_us"] = timer(lambda: sparse_attention(q, k, v, look(), backend=BACKEND))
        row[key + "thr_total_us"] = timer(lambda: sparse_attention(q, k, v, tlook(), backend=BACKEND))
    set_decode_path("split")
    row["kept_keys"] = want.float().mean().item()


def bench_targets(timer, paths, smoke: bool):
    """The issue-23 kernel targets: 128K, 10 %, batch 1, 32 and 8 KV heads, each decode path against the best dense
    kernel; hierarchical vs flat lookup at 512K (new parallel compaction + expansion and the old serial kernels)."""
    from framework.kernels.squeezed_attention import triton_ops

    k_ = 1024
    n128, n512 = (1 * k_, 2 * k_) if smoke else (128 * k_, 512 * k_)
    mha, gqa = (4, 2) if smoke else (32, 8)
    rows = []
    for hkv, n, hier in ((mha, n128, False), (gqa, n128, False), (mha, n512, True), (gqa, n512, True)):
        ctx = make_context(1, hkv, n, 0.05, seed=n + hkv + 1)
        q = torch.randn(1, HQ, 1, D, generator=torch.Generator(device=DEVICE).manual_seed(n + 1), device=DEVICE,
                        dtype=DT)
        kv_bytes = 2 * hkv * n * D * q.element_size()
        cent_bytes = hkv * ctx["c"] * D * q.element_size()
        dense = {}
        if not smoke:
            for name, fn in sdpa_flash(q, ctx["k"], ctx["v"]).items():
                dense["sdpa_" + name] = timer(fn)
        dense["ours_split_k"] = timer(lambda: dense_attention(q, ctx["k"], ctx["v"], causal=False, backend=BACKEND))
        best = min(dense, key=dense.get)
        thr = calibrate_thresholds(ctx, 1, 1, 0.1, seed=17)
        row = {"mode": "decode", "batch": 1, "kv_heads": hkv, "q_heads": HQ, "context": n, "budget": 0.1,
               "centroids": ctx["c"], "dense_us": dense[best], "dense_best": best, "dense_all_us": dense}
        for path in paths:  # one failing path must not lose the other's numbers
            try:
                _time_paths(timer, q, ctx, 0.1, thr, [path], row)
            except Exception as exc:  # noqa: BLE001
                row[f"{path}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                print(f"  {path} path failed: {row[f'{path}_error']}", flush=True)
        if "fused" in paths:  # the fused lookup's finishing program does serial work: other warp counts
            saved = triton_ops.CONFIG["fused_lookup_warps"]
            for warps in (w for w in (4, 8, 16) if w != saved):
                triton_ops.CONFIG["fused_lookup_warps"] = warps
                try:
                    _time_paths(timer, q, ctx, 0.1, thr, ["fused"], row, prefix=f"w{warps}_", totals_only=True)
                except Exception as exc:  # noqa: BLE001 - a tile configuration that does not compile is reported
                    row[f"w{warps}_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                    print(f"  fused lookup with {warps} warps failed: {row[f'w{warps}_error']}", flush=True)
            triton_ops.CONFIG["fused_lookup_warps"] = saved
        ok_paths = [p_ for p_ in paths if f"{p_}_total_us" in row]
        sel_bytes = 2 * hkv * row.get("kept_keys", 0.1 * n) * D * q.element_size()
        if COPY_BW:
            row.update(copy_tbps=COPY_BW / 1e12, dense_floor_us=kv_bytes / COPY_BW * 1e6,
                       floor_us=(sel_bytes + cent_bytes) / COPY_BW * 1e6)
        for path in ok_paths:
            row[f"{path}_speedup"] = row["dense_us"] / row[f"{path}_total_us"]
            row[f"{path}_thr_speedup"] = row["dense_us"] / row[f"{path}_thr_total_us"]
        if hier:
            h = make_hierarchy(ctx, 0.01, n, seed=7)
            h["thr"] = calibrate_coarse_threshold(ctx, h, 1, 1, seed=99)
            lay = ctx["layout"]
            for label, compact, expand_alive in (("hier_new", 1, 1), ("hier_old", 0, 0)):
                triton_ops.CONFIG["parallel_compact"] = compact
                triton_ops.CONFIG["parallel_expand_alive"] = expand_alive
                for sel_mode, kw in (("budget", {"budget": 0.1}), ("thr", {"threshold": thr, "sync": False})):
                    hl = lambda: hierarchical_lookup(  # noqa: E731
                        q, h["coarse"], h["coarse_sizes"], h["f2c"], ctx["centroids"], ctx["sizes"], lay.key_labels,
                        coarse_threshold=h["thr"], layout=lay, backend=BACKEND, **kw)
                    try:
                        row[f"{label}_{sel_mode}_lookup_us"] = timer(hl)
                        row[f"{label}_{sel_mode}_total_us"] = timer(
                            lambda: sparse_attention(q, ctx["k"], ctx["v"], hl(), backend=BACKEND))
                    except Exception as exc:  # noqa: BLE001
                        row[f"{label}_{sel_mode}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                        print(f"  {label} {sel_mode} failed: {row[f'{label}_{sel_mode}_error']}", flush=True)
            triton_ops.CONFIG["parallel_compact"] = 1
            triton_ops.CONFIG["parallel_expand_alive"] = 1
            row["hier_fine_alive"] = (hl().cluster_scores > 0).float().sum(-1).mean().item()
            row["hier_coarse_centroids"] = h["c1"]
        rows.append(row)
        print(fmt_target(row, ok_paths), flush=True)
        del ctx
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return rows


def fmt_target(r, paths) -> str:
    parts = [f"N={r['context'] // 1024}K Hkv={r['kv_heads']}: dense {r['dense_us']:.1f} us ({r['dense_best']})"]
    if "floor_us" in r:
        parts.append(f"byte floor {r['floor_us']:.1f} us (dense floor {r['dense_floor_us']:.1f})")
    for p in paths:
        parts.append(f"{p}: lookup {r[p + '_lookup_us']:.1f} + attention {r[p + '_attention_us']:.1f}, total "
                     f"{r[p + '_total_us']:.1f} us = {r[p + '_speedup']:.2f}x; threshold total "
                     f"{r[p + '_thr_total_us']:.1f} us = {r[p + '_thr_speedup']:.2f}x")
    for w in ("w4_", "w8_", "w16_"):
        if w + "fused_total_us" in r:
            parts.append(f"fused lookup with {w[1:-1]} warps: total {r[w + 'fused_total_us']:.1f}, threshold "
                         f"{r[w + 'fused_thr_total_us']:.1f} us")
    if all(f"hier_{v}_{m}_lookup_us" in r for v in ("new", "old") for m in ("budget", "thr")) and paths:
        flat = r[paths[0] + "_lookup_us"]
        flat_thr = r[paths[0] + "_thr_lookup_us"]
        parts.append(
            f"lookup flat {flat:.1f} / hier new {r['hier_new_budget_lookup_us']:.1f} / hier old "
            f"{r['hier_old_budget_lookup_us']:.1f} us (budget); flat {flat_thr:.1f} / hier new "
            f"{r['hier_new_thr_lookup_us']:.1f} / hier old {r['hier_old_thr_lookup_us']:.1f} us (threshold); "
            f"fine clusters alive {r['hier_fine_alive']:.0f} / {r['centroids']}")
    return "\n  ".join(parts)


def measure_copy_bandwidth(device: str | torch.device = "cuda") -> float | None:
    """Bytes read + written per second by a 1 GiB device-to-device copy (median of 10 after 2 warm-ups); ``None``
    off a GPU. The one implementation: ``squeezed_attention_generation.py`` uses it for its Amdahl ceilings."""
    if torch.device(device).type != "cuda":
        return None
    x = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    times = []
    for _ in range(12):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        y.copy_(x)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    del x, y
    return 2 * (1 << 30) / statistics.median(times[2:])


def render_markdown(result: dict) -> str:
    """Markdown tables of a result JSON (decode, prefill, hierarchical lookup)."""
    rows = result["rows"]
    k = 1024
    out = [f"Device: {result['device']} ({result['sm_count']} SMs), torch {result['torch']}, triton "
           f"{result['triton']}, {result['dtype']}, head dim {result['head_dim']}, 32 query heads. Timing: "
           f"{result['timing']}. Bandwidth = bytes of K, V (selected) and centroids that must be read / time.", ""]
    for mode in ("decode", "prefill"):
        sel = [r for r in rows if r["mode"] == mode]
        if not sel:
            continue
        out.append(f"### {mode.capitalize()}" + (" (fixed-context part of the user-input prefill)"
                                                  if mode == "prefill" else ""))
        out.append("")
        extra = "dense TB/s" if mode == "decode" else "dense TFLOP/s"
        out.append(f"| B | Hkv | N | T | budget | dense µs (baseline) | dense floor µs | {extra} | lookup µs | "
                   "attention µs | total µs | floor µs | speedup | lookup share | TB/s | thr.: kept | thr.: total µs | "
                   "thr.: floor µs | thr.: speedup | thr.: TB/s |")
        out.append("|" + "---|" * 20)
        fl = lambda r, key: f"{r[key]:.1f}" if key in r else "–"  # noqa: E731 - floors absent in older JSON
        for r in sel:
            dense_rate = (f"{r['dense_tbps']:.2f}" if mode == "decode" else f"{r['dense_tflops']:.0f}")
            out.append(
                f"| {r['batch']} | {r['kv_heads']} | {r['context'] // k}K | {r['query_tokens']} | {r['budget']:.0%} | "
                f"{r['dense_us']:.1f} ({r['dense_best']}) | {fl(r, 'dense_floor_us')} | {dense_rate} | "
                f"{r['lookup_us']:.1f} | {r['attention_us']:.1f} | {r['total_us']:.1f} | {fl(r, 'floor_us')} | "
                f"**{r['speedup']:.2f}x** | {r['lookup_share']:.0%} | {r['total_tbps']:.2f} | "
                f"{r['thr_kept_keys'] / r['context']:.1%} | {r['thr_total_us']:.1f} | {fl(r, 'thr_floor_us')} | "
                f"{r['thr_speedup']:.2f}x | {r['thr_total_tbps']:.2f} |")
        out.append("")
    hier = [r for r in rows if "hier_lookup_us" in r]
    if hier:
        out.append("### Hierarchical (1% coarse over 5% fine centroids) vs single-level lookup")
        out.append("")
        out.append("| mode | B | Hkv | N | T | budget | fine clusters alive | single lookup µs | hier. lookup µs | "
                   "single/hier. | single total µs | hier. total µs | thr.: single lookup µs | "
                   "thr.: hier. lookup µs | thr.: single/hier. |")
        out.append("|" + "---|" * 15)
        for r in hier:
            out.append(
                f"| {r['mode']} | {r['batch']} | {r['kv_heads']} | {r['context'] // k}K | {r['query_tokens']} | "
                f"{r['budget']:.0%} | {r['hier_fine_alive']:.0f} / {r['centroids']} | {r['lookup_us']:.1f} | "
                f"{r['hier_lookup_us']:.1f} | {r['hier_vs_single_lookup']:.2f}x | {r['total_us']:.1f} | "
                f"{r['hier_total_us']:.1f} | " + (
                    f"{r['thr_lookup_us']:.1f} | {r['hier_thr_lookup_us']:.1f} | "
                    f"{r['thr_lookup_us'] / r['hier_thr_lookup_us']:.2f}x |" if "hier_thr_lookup_us" in r
                    else "– | – | – |"))
        out.append("")
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few configurations (smoke test)")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="write the results as JSON here")
    parser.add_argument("--reps", type=int, default=30, help="timed graph replays per measurement (median)")
    parser.add_argument("--only", choices=("decode", "prefill"), default=None)
    parser.add_argument("--profile", action="store_true", help="print a per-kernel breakdown at 128K and exit")
    parser.add_argument("--tune", action="store_true", help="sweep kernel tile configurations at 128K and exit")
    parser.add_argument("--render", type=pathlib.Path, default=None,
                        help="print the markdown tables of an earlier --out JSON and exit (no GPU needed)")
    parser.add_argument("--targets", action="store_true",
                        help="only the issue-23 targets: 128K/10%%/batch 1 at 32 and 8 KV heads for each --paths, "
                             "and hierarchical vs flat lookup at 512K")
    parser.add_argument("--paths", default="split,fused", help="decode paths to compare with --targets")
    parser.add_argument("--smoke", action="store_true",
                        help="--targets at tiny sizes on the CPU under TRITON_INTERPRET=1 (checks the script only)")
    args = parser.parse_args(argv)
    if args.render is not None:
        print(render_markdown(json.loads(args.render.read_text())))
        return None
    paths = [p for p in args.paths.split(",") if p]
    if not paths or any(p not in ("split", "fused") for p in paths):
        raise SystemExit(f"--paths must list 'split' and/or 'fused', got {args.paths!r}")
    if args.smoke:
        global DEVICE, DT, HQ, D, WINDOW, BACKEND
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise SystemExit("--smoke runs the kernels in Triton's CPU interpreter: set TRITON_INTERPRET=1")
        DEVICE, DT, HQ, D, WINDOW, BACKEND = "cpu", torch.float32, 8, 16, 16, "triton"
        started = time.time()
        rows = bench_targets(Timer(1), paths, smoke=True)
        return write_targets(args, argv, rows, started)
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    timer = Timer(args.reps)
    global COPY_BW
    COPY_BW = measure_copy_bandwidth(DEVICE)
    print(f"device-to-device copy bandwidth: {COPY_BW / 1e12:.2f} TB/s (read + write)", flush=True)
    if args.targets:
        started = time.time()
        rows = bench_targets(timer, paths, smoke=False)
        return write_targets(args, argv, rows, started)
    if args.profile or args.tune:
        extra = {}
        if args.profile:
            extra["profile"] = profile_breakdown(timer)
        if args.tune:
            extra["tune"] = tune(timer)
        if args.out is not None:
            write_json_atomic(args.out, extra, indent=1, default=str, keep_nonfinite=True)
        return extra
    rows: list[dict] = []
    started = time.time()
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    cache_key, ctx = None, None
    for mode, b, hkv, n, t, budgets, with_hier in plan(args.quick):
        if args.only and mode != args.only:
            continue
        if cache_key != (b, hkv, n):
            ctx = None
            torch.cuda.empty_cache()
            ctx = make_context(b, hkv, n, 0.05, seed=n + hkv + b)
            cache_key = (b, hkv, n)
        hier = None
        if with_hier:
            hier = make_hierarchy(ctx, 0.01, n, seed=7)
            hier["thr"] = calibrate_coarse_threshold(ctx, hier, b, t, seed=99)
        try:
            bench_config(timer, mode, b, hkv, n, t, budgets, ctx, rows, hier)
        except torch.OutOfMemoryError as exc:
            print(f"| {mode} | {b} | {hkv} | {n // 1024}K | {t} | out of memory: {exc} |", flush=True)
        write_result(args, argv, rows, started)  # partial results survive a time limit
    return write_result(args, argv, rows, started)


def write_targets(args, argv, rows, started):
    result = {
        "benchmark": "squeezed_attention_speed --targets",
        "command": " ".join([pathlib.Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (Triton interpreter, smoke)",
        "torch": torch.__version__, "triton": triton.__version__, "dtype": str(DT), "head_dim": D,
        "timing": f"CUDA graph replay, L2 flushed before each, median of {args.reps}" if DEVICE == "cuda"
        else "one eager call (meaningless)",
        "copy_bandwidth_tbps": None if COPY_BW is None else COPY_BW / 1e12,
        "wall_s": time.time() - started, "rows": rows,
    }
    if args.out is not None:
        write_json_atomic(args.out, result, indent=1, keep_nonfinite=True)
    return result


def write_result(args, argv, rows, started):
    props = torch.cuda.get_device_properties(0)
    result = {
        "benchmark": "squeezed_attention_speed",
        "command": " ".join([pathlib.Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "device": torch.cuda.get_device_name(0),
        "sm_count": props.multi_processor_count,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "dtype": "bfloat16",
        "head_dim": D,
        "timing": f"CUDA graph replay, L2 flushed before each, median of {args.reps}",
        "peak_bandwidth_tbps": PEAK_BW / 1e12,
        "copy_bandwidth_tbps": None if COPY_BW is None else COPY_BW / 1e12,
        "wall_s": time.time() - started,
        "rows": rows,
    }
    if args.out is not None:
        write_json_atomic(args.out, result, indent=1, keep_nonfinite=True)
    return result


if __name__ == "__main__":
    main()
