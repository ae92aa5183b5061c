"""Squeezed Attention end to end: a Llama-3.1-8B-shaped model answering over a long fixed context.

Usage (GPU; needs only torch, triton and transformers)::

    python benchmarks/squeezed_attention_generation.py --out $OUT/generation.json
    python benchmarks/squeezed_attention_generation.py --contexts 131072 --batches 1 --budgets 0.1 --quick
    python benchmarks/squeezed_attention_generation.py --render FILE.json      # markdown tables from a JSON
    python benchmarks/squeezed_attention_generation.py --tiny                  # CPU smoke run (tiny model)

Model: `LlamaForCausalLM` with the Llama-3.1-8B shape (32 layers, hidden 4096, 32 query / 8 KV heads, head dim 128,
MLP 14336, vocab 128256, RoPE theta 500000), random bf16 weights (HF init, std 0.02). Random weights are fine for
speed: every kernel does the same work whatever the values are; the one data-dependent quantity, how many keys a
calibrated threshold keeps, is reported as measured (and the "topk" mode keeps exactly the budget). RoPE without
Llama-3.1's long-context frequency rescaling (same cost).

Per fixed-context length N (random token ids):
- build: `FixedContextIndex.build` (dense prefill of N tokens, k-means of the keys of all 32 x 8 (layer, KV head)
  pairs, threshold calibration) and `compile_fixed_context` (cluster-contiguous K/V, one copy shared by a batch):
  wall time and peak GPU memory of each;
- eager: Transformers `generate()` as users call it, "sdpa" vs "squeezed" (inside `serve`) on the same weights,
  a `DynamicCache` holding the fixed context: per-token latency over the generated tokens;
- static (per batch B, per user-input length T): time to first token (prefill of T tokens + greedy pick) and,
  with the decode step captured in a CUDA graph, per-token latency over the generated tokens, for the dense model
  and for squeezed attention (budget x selection mode). Both run through `StaticLlamaRunner` with the same storage
  (fixed K/V shared by the batch, per-sequence tail), so their difference is the attention's. Dense prefill is
  timed with our Triton kernel and with PyTorch's flash-attention op (query group folded into the query axis);
  the faster is the baseline. Dense decode uses our split-K kernel (the fastest dense decode kernel measured in
  docs/results.md);
- peak GPU memory of each runner; share of GPU time spent in attention in one eager decode step (torch.profiler,
  kernels launched inside the runner's "attention" ranges over all kernels);
- Amdahl ceilings: decode = (weight bytes + dense attention bytes) / (weight bytes + squeezed attention bytes),
  each read at the copy bandwidth measured in the same run; prefill = ratio of FLOPs (linear layers + attention
  + the two-pass lookup).
Configurations that cannot fit the card's memory are skipped with the reason printed. Results are written to the
JSON after every measurement and printed as markdown rows as they arrive.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import pathlib
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.squeezed_attention_speed import measure_copy_bandwidth  # noqa: E402
from framework.atomic_files import write_json_atomic  # noqa: E402  (standard library only)
from framework.kernels.squeezed_attention import set_decode_path  # noqa: E402
from framework.kernels.squeezed_attention.ops import DECODE_PATHS  # noqa: E402
from framework.models.components.squeezed import FixedContextIndex, SqueezedAttention, serve  # noqa: E402
from framework.models.components.squeezed.static_decoding import (  # noqa: E402
    SelectionRule,
    ATTENTION_RANGE,
    StaticLlamaRunner,
    compile_fixed_context,
    generate_cache_keyword,
)

GB = 1024**3
WINDOW = 100
CENTROID_FRACTION = 0.05
MODES = ("topk", "calibrated")
GEMM_NAMES = ("gemm", "gemv", "cutlass", "sm90", "nvjet", "cublas", "xmma")  # matmul kernels in profiler names
T0 = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------- arguments

def _int_list(name: str, text: str, low: int = 1) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--{name} must be comma-separated integers, got {text!r}") from None
    if not vals or any(v < low for v in vals):
        raise SystemExit(f"--{name} values must be integers >= {low}, got {text!r}")
    return vals


def _budget_list(text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--budgets must be comma-separated numbers in (0, 1], got {text!r}") from None
    bad = [v for v in vals if not (math.isfinite(v) and 0.0 < v <= 1.0)]
    if not vals or bad:
        raise SystemExit(f"--budgets must be numbers in (0, 1], got {bad or text!r}")
    return vals


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contexts", default="32768,65536,131072", help="fixed-context lengths N")
    p.add_argument("--batches", default="1,4")
    p.add_argument("--budgets", default="0.1,0.3", help="fractions in (0, 1]")
    p.add_argument("--inputs", default="256,2048", help="user-input lengths T (time to first token)")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--modes", default="topk,calibrated", help=f"selection modes, from {MODES}")
    p.add_argument("--kmeans-iters", type=int, default=10)
    p.add_argument("--kmeans-init", default="random", choices=("random", "k-means++"))
    p.add_argument("--reps", type=int, default=3, help="repetitions of each time-to-first-token measurement")
    p.add_argument("--quick", action="store_true", help="1 rep, no eager generate(), profile batch 1 only")
    p.add_argument("--no-eager", action="store_true", help="skip the Transformers generate() runs")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/squeezed_attention_generation.json)")
    p.add_argument("--render", default=None, help="print the markdown tables of a JSON written by this script")
    p.add_argument("--tiny", action="store_true", help="tiny model on CPU (smoke test of the whole script)")
    p.add_argument("--decode-paths", default="split,fused",
                   help="Triton decode kernels to measure the graph-captured decode with: 'split' (separate lookup, "
                        "selection, expansion, attention and reduce launches) and/or 'fused' (one lookup launch + "
                        "expansion, reduce inside the attention kernel); the dense baseline takes the faster")
    a = p.parse_args(argv)
    a.contexts = _int_list("contexts", a.contexts, low=WINDOW + 2)
    a.batches = _int_list("batches", a.batches)
    a.budgets = _budget_list(a.budgets)
    a.inputs = _int_list("inputs", a.inputs)
    a.modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    a.decode_paths = [m.strip() for m in a.decode_paths.split(",") if m.strip()]
    if not a.decode_paths or any(m not in DECODE_PATHS for m in a.decode_paths):
        raise SystemExit(f"--decode-paths must be a comma-separated subset of {DECODE_PATHS}, got {a.decode_paths}")
    if not a.modes or any(m not in MODES for m in a.modes):
        raise SystemExit(f"--modes must be a comma-separated subset of {MODES}, got {a.modes}")
    for name in ("new_tokens", "kmeans_iters", "reps"):
        if getattr(a, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.new_tokens < 4:
        raise SystemExit(f"--new-tokens must be >= 4 (per-token latency needs a few steps), got {a.new_tokens}")
    if a.quick:
        a.reps, a.no_eager = 1, True
    return a


# ------------------------------------------------------------------------------------------------- model

def model_config(args, max_positions: int):
    from transformers import LlamaConfig

    if args.tiny:
        return LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=500000.0,
                           max_position_embeddings=max_positions, tie_word_embeddings=False)
    return LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128, rope_theta=500000.0,
                       rms_norm_eps=1e-5, max_position_embeddings=max_positions, tie_word_embeddings=False)


def make_model(args, device: torch.device, max_positions: int):
    from transformers import LlamaForCausalLM

    cfg = model_config(args, max_positions)
    dtype = torch.float32 if args.tiny else torch.bfloat16
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    torch.manual_seed(args.seed)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    model.eval()  # built in `dtype` (RoPE's inv_freq stays fp32, as after from_pretrained)
    model.set_attn_implementation("sdpa")
    return model


def weight_bytes_per_token(model) -> int:
    """Bytes of weights read per decode step: every parameter but the embedding table (one row per token)."""
    emb = model.model.embed_tokens.weight
    return sum(p.numel() * p.element_size() for p in model.parameters() if p is not emb)


# ------------------------------------------------------------------------------------------------- helpers

class Clock:
    """Wall time of GPU work (synchronised)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn) -> float:
        self.sync()
        t = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t


def free_bytes(device: torch.device) -> int:
    if device.type != "cuda":
        return 1 << 62
    gc.collect()
    torch.cuda.empty_cache()
    return torch.cuda.mem_get_info(device)[0]


def reset_peak(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def peak_gb(device: torch.device, base: int = 0) -> float | None:
    if device.type != "cuda":
        return None
    return round((torch.cuda.max_memory_allocated(device) - base) / GB, 2)


def total_peak_gb(device: torch.device) -> float | None:
    """Peak of all allocated GPU memory since the last reset (weights and resident contexts included)."""
    return None if device.type != "cuda" else round(torch.cuda.max_memory_allocated(device) / GB, 2)


class Results:
    """The JSON document, rewritten atomically after every measurement."""

    def __init__(self, path: pathlib.Path, meta: dict):
        self.path = path
        self.doc = {"meta": meta, "contexts": {}}

    def context(self, n: int) -> dict:
        return self.doc["contexts"].setdefault(str(n), {"build": None, "skipped": [], "eager": [], "static": []})

    def save(self) -> None:
        write_json_atomic(self.path, self.doc, indent=1, keep_nonfinite=True)


def skip(res: Results, n: int, what: str, reason: str) -> None:
    log(f"SKIP {what}: {reason}")
    res.context(n)["skipped"].append({"what": what, "reason": reason})
    res.save()


def kv_bytes(cfg, tokens: int, batch: int = 1) -> int:
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return cfg.num_hidden_layers * batch * tokens * cfg.num_key_value_heads * d * 2 * 2


# ------------------------------------------------------------------------------------------------- ceilings

def decode_ceiling(cfg, wbytes: int, bw: float | None, n: int, b: int, tail: int, kept: float, c: int) -> dict:
    """Bytes a decode step must read: weights once, K+V of every attended key per sequence, centroids per sequence."""
    d = cfg.head_dim
    per_key = cfg.num_key_value_heads * d * 2 * 2 * cfg.num_hidden_layers  # K and V, bf16, all layers
    dense = wbytes + b * (n + tail) * per_key
    cent = c * cfg.num_key_value_heads * d * 2 * cfg.num_hidden_layers
    sparse = wbytes + b * (kept * n + tail) * per_key + b * cent
    out = {"dense_bytes": dense, "squeezed_bytes": sparse, "ceiling": dense / sparse}
    if bw:
        out["dense_floor_ms"] = dense / bw * 1e3
        out["squeezed_floor_ms"] = sparse / bw * 1e3
    return out


def prefill_ceiling(cfg, params: int, n: int, b: int, t: int, kept: float, c: int) -> dict:
    """FLOPs of a prefill of T tokens: linear layers 2*P*B*T; attention 4*B*T*keys*D*Hq per layer; lookup 2 passes."""
    hq, d, layers = cfg.num_attention_heads, cfg.head_dim, cfg.num_hidden_layers
    lin = 2 * params * b * t
    att = lambda keys: 4 * b * t * keys * d * hq * layers  # noqa: E731
    dense = lin + att(n + t / 2)
    sparse = lin + att(kept * n + t / 2) + 2 * att(c)
    return {"dense_flop": dense, "squeezed_flop": sparse, "ceiling": dense / sparse}


# ------------------------------------------------------------------------------------------------- measurements

def attention_kernel_names() -> set[str]:
    """Names of the Triton kernels a decode step launches for attention (lookup, selection, sparse and dense
    attention; not the RoPE + cache write): Triton launches bypass PyTorch's op dispatcher, so the profiler does not
    charge them to the enclosing ``record_function`` range (the squeezed rows read 0 µs before this fix)."""
    from framework.kernels.squeezed_attention import triton_attention, triton_fused, triton_lookup, triton_select

    return {name for mod in (triton_attention, triton_fused, triton_lookup, triton_select)
            for name, obj in vars(mod).items() if name.endswith("_kernel") and hasattr(obj, "run")}


def attribute_kernels(ranges: list[tuple[int, int]], launches: dict[int, int],
                      kernels: list[tuple[str, int, float]], names: set[str]) -> dict:
    """GPU time of the kernels launched inside the attention ranges.

    Args:
        ranges: CPU ``(start_ns, end_ns)`` of every attention ``record_function`` range.
        launches: correlation id -> CPU start (ns) of the runtime / driver call that launched the kernel.
        kernels: ``(name, correlation id, GPU µs)`` of every kernel.
        names: kernel names that are attention by construction (used for kernels whose launch is not recorded).

    Returns: ``{"attention_us", "by_launch_us", "by_name_us", "unmatched"}`` — a kernel counts as attention when
    its launch lies in a range (correlation), or, when its launch was not recorded, when its name is an attention
    kernel's."""
    ranges = sorted(ranges)
    by_launch = by_name = 0.0
    unmatched = 0
    for name, corr, us in kernels:
        start = launches.get(corr)
        if start is None:
            unmatched += 1
            if name in names:
                by_name += us
            continue
        if any(lo <= start <= hi for lo, hi in ranges):
            by_launch += us
    return {"attention_us": by_launch + by_name, "by_launch_us": by_launch, "by_name_us": by_name,
            "unmatched": unmatched}


def attention_share(runner: StaticLlamaRunner, device: torch.device) -> dict:
    """One eager decode step under torch.profiler: GPU time of the attention kernels (launched inside the
    runner's attention ranges, matched by correlation id; by kernel name where a launch was not recorded)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    if device.type != "cuda":
        return {}
    runner.annotate = True
    try:
        runner.decode_step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            runner.decode_step()
            torch.cuda.synchronize()
        events = prof.events()
    except Exception as exc:  # noqa: BLE001 - the profile is an extra; its failure must not lose the timings
        log(f"profiler failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        runner.annotate = False
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    total = sum(e.time_range.elapsed_us() for e in kernels)
    names = attention_kernel_names()
    try:  # raw kineto events carry the correlation ids linking each kernel to its launch call
        ranges, launches, kern = [], {}, []
        for e in prof.profiler.kineto_results.events():
            if e.device_type() == DeviceType.CUDA:
                kern.append((e.name(), e.correlation_id(), e.duration_ns() / 1e3))
            elif e.name() == ATTENTION_RANGE:
                ranges.append((e.start_ns(), e.start_ns() + e.duration_ns()))
            elif "aunch" in e.name() and e.correlation_id():  # cudaLaunchKernel, cuLaunchKernel(Ex), ...
                launches[e.correlation_id()] = e.start_ns()
        att = attribute_kernels(ranges, launches, kern, names)
        att["method"] = "correlation"
    except Exception as exc:  # noqa: BLE001 - fall back to names alone
        log(f"profiler correlation unavailable ({type(exc).__name__}: {exc}); attributing kernels by name")
        by_name = sum(e.time_range.elapsed_us() for e in kernels if e.name in names)
        att = {"attention_us": by_name, "by_launch_us": None, "by_name_us": by_name, "unmatched": None,
               "method": "name"}
    in_attention = att["attention_us"]
    by_name: dict[str, float] = {}
    for e in kernels:
        by_name[e.name] = by_name.get(e.name, 0.0) + e.time_range.elapsed_us()
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:12]
    gemm = sum(v for k, v in by_name.items() if any(w in k.lower() for w in GEMM_NAMES))
    named = sum(v for k, v in by_name.items() if k in names)
    return {"kernel_us": total, "attention_us": in_attention, "share": in_attention / total if total else None,
            "attention_attribution": att, "attention_named_kernels_us": named,
            "gemm_us": gemm, "other_us": total - gemm - in_attention, "kernels_per_step": len(kernels),
            "top_kernels": [[k[:90], round(v, 1)] for k, v in top]}


def time_prefill(runner: StaticLlamaRunner, question: torch.Tensor, clock: Clock, reps: int) -> float:
    runner.prefill(question)  # warm-up (Triton compiles on first use)
    return statistics.median(clock.time(lambda: runner.prefill(question)) for _ in range(reps))


def time_graph_decode(runner: StaticLlamaRunner, question: torch.Tensor, new: int, clock: Clock) -> dict:
    """Prefill, capture one decode step, replay it ``new`` times back to back (no host sync in between)."""
    runner.prefill(question)
    graph_error = None
    step = runner.decode_step  # CPU smoke run, or capture failed: eager steps (reported)
    if clock.cuda:
        try:
            step = runner.capture_decode().step
        except Exception as exc:  # noqa: BLE001 - reported in the row, the eager time is still measured
            graph_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log(f"CUDA-graph capture failed ({graph_error}); timing eager steps")
            torch.cuda.synchronize()
    runner.prefill(question)
    step()  # first replay outside the timed loop
    total = clock.time(lambda: [step() for _ in range(new)])
    return {"ms_per_token": total / new * 1e3, "tokens_per_s": runner.batch_size * new / total,
            "graph": clock.cuda and graph_error is None, "graph_error": graph_error}


def kept_fraction(runner: StaticLlamaRunner, n: int) -> float | None:
    sel = [s for s in runner.last_selection if s is not None]
    if not sel:
        return None
    return float(torch.stack([s.key_counts.float() for s in sel]).mean().item()) / n


def eager_generate(model, index, prompt, new: int, clock: Clock, settings=None) -> dict:
    """Transformers generate(): per-token latency = (time for `new` tokens - time for 1 token) / (new - 1)."""

    def run(tokens: int):
        cache = index.new_cache(prompt.shape[0])
        return model.generate(input_ids=prompt, **{generate_cache_keyword(): cache}, max_new_tokens=tokens,
                              min_new_tokens=tokens, do_sample=False)

    def timed():
        run(2)  # warm-up
        one = clock.time(lambda: run(1))
        full = clock.time(lambda: run(new))
        return one, full

    base = reset_peak(clock_device(clock))
    with torch.no_grad():
        if settings is None:
            model.set_attn_implementation("sdpa")
            one, full = timed()
        else:
            model.set_attn_implementation("squeezed")
            with serve(model, index, settings):
                one, full = timed()
            model.set_attn_implementation("sdpa")
    per = (full - one) / (new - 1)
    dev = clock_device(clock)
    return {"ttft_s": one, "ms_per_token": per * 1e3, "tokens_per_s": prompt.shape[0] / per,
            "peak_gb": peak_gb(dev, base), "peak_total_gb": total_peak_gb(dev)}


def clock_device(clock: "Clock") -> torch.device:
    return torch.device("cuda" if clock.cuda else "cpu")


# ------------------------------------------------------------------------------------------------- markdown

def render(doc: dict) -> str:
    meta = doc["meta"]
    lines = [f"Device: {meta.get('device')}, torch {meta.get('torch')}, triton {meta.get('triton')}, "
             f"transformers {meta.get('transformers')}; copy bandwidth "
             f"{(meta.get('copy_bw') or 0) / 1e12:.2f} TB/s; weights read per token "
             f"{meta.get('weight_bytes', 0) / 1e9:.2f} GB.", ""]
    lines += ["| N | build s (prefill+k-means+calibration) | build peak GB | compile s | compile GB held |",
              "|---|---|---|---|---|"]
    for n, ctx in doc["contexts"].items():
        b = ctx.get("build") or {}
        lines.append(f"| {n} | {b.get('build_s', float('nan')):.1f} | {b.get('build_peak_gb')} | "
                     f"{b.get('compile_s', float('nan')):.2f} | {b.get('compiled_gb')} |")
    lines += ["", "Time to first token (prefill of the user input + greedy pick):", "",
              "| N | B | T | dense ms (baseline) | squeezed | budget | kept | ms | speedup | FLOP ceiling | "
              "% of ceiling |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, ctx in doc["contexts"].items():
        for r in ctx["static"]:
            if r.get("kind") != "ttft" or r["attention"] != "squeezed":
                continue
            kept = "–" if r["kept"] is None else f"{r['kept']:.1%}"
            if r["dense_ms"] is None:
                dense, speed, frac = "failed", "–", "–"
            else:
                dense = f"{r['dense_ms']:.1f} ({r['dense_impl']})"
                speed, frac = f"**{r['speedup']:.2f}x**", f"{r['speedup'] / r['ceiling']:.0%}"
            lines.append(
                f"| {n} | {r['batch']} | {r['input']} | {dense} | {r['mode']} | {r['budget']:.0%} | {kept} | "
                f"{r['ms']:.1f} | {speed} | {r['ceiling']:.2f}x | {frac} |")
    lines += ["", "Decode (CUDA graph per step, greedy, per-token latency over the generated tokens):", "",
              "| N | B | dense ms/token | dense tok/s | squeezed | kernels | budget | kept | ms/token | tok/s | speedup | "
              "byte ceiling | % of ceiling | attention share dense / squeezed | peak GB dense / squeezed (runner; all) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, ctx in doc["contexts"].items():
        for r in ctx["static"]:
            if r.get("kind") != "decode" or r["attention"] != "squeezed":
                continue
            share = lambda x: "–" if x is None else f"{x:.0%}"  # noqa: E731
            kept = "–" if r["kept"] is None else f"{r['kept']:.1%}"
            lines.append(
                f"| {n} | {r['batch']} | {r['dense_ms']:.2f} | {r['dense_tps']:.0f} | {r['mode']} | "
                f"{r.get('decode_path', 'split')} | {r['budget']:.0%} | {kept} | {r['ms']:.2f} | {r['tps']:.0f} | **{r['speedup']:.2f}x** | "
                f"{r['ceiling']:.2f}x | {r['speedup'] / r['ceiling']:.0%} | {share(r.get('dense_share'))} / "
                f"{share(r.get('share'))} | {r.get('dense_peak_gb')} / {r.get('peak_gb')} "
                f"({r.get('dense_peak_total_gb')} / {r.get('peak_total_gb')}) |")
    lines += ["", "One eager decode step under torch.profiler (GPU kernel time, µs):", "",
              "| N | B | attention | budget | kernels | total | attention | matmul | other |", "|---|---|---|---|---|---|---|---|---|"]
    for n, ctx in doc["contexts"].items():
        for r in ctx["static"]:
            p = r.get("profile") or {}
            if not p.get("kernel_us"):
                continue
            name = "dense" if r["kind"] == "dense" else f"squeezed ({r['mode']}, {r.get('decode_path', 'split')})"
            budget = "–" if r["kind"] == "dense" else f"{r['budget']:.0%}"
            lines.append(f"| {n} | {r['batch']} | {name} | {budget} | {p['kernels_per_step']} | {p['kernel_us']:.0f} | "
                         f"{p['attention_us']:.0f} | {p['gemm_us']:.0f} | {p['other_us']:.0f} |")
    lines += ["", "Eager Transformers generate() (DynamicCache, no graphs):", "",
              "| N | B | attention | budget | TTFT s | ms/token | tok/s | speedup (ms/token) | peak GB (all) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for n, ctx in doc["contexts"].items():
        for r in ctx["eager"]:
            lines.append(f"| {n} | {r['batch']} | {r['attention']} | {r.get('budget') or '–'} | {r['ttft_s']:.2f} | "
                         f"{r['ms_per_token']:.2f} | {r['tokens_per_s']:.1f} | {r.get('speedup', 1.0):.2f}x | "
                         f"{r.get('peak_total_gb')} |")
    skipped = [(n, s) for n, ctx in doc["contexts"].items() for s in ctx["skipped"]]
    if skipped:
        lines += ["", "Skipped:", ""] + [f"- N={n}, {s['what']}: {s['reason']}" for n, s in skipped]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- main

def _eager_rows(args, model, index, prompt, b: int, n: int, ctx_doc: dict, res: Results, clock: Clock) -> None:
    """Transformers generate(): "sdpa", then "squeezed" for every budget and selection mode."""
    dense = eager_generate(model, index, prompt, args.new_tokens, clock)
    dense.update(batch=b, attention="sdpa", budget=None)
    ctx_doc["eager"].append(dense)
    res.save()
    log(f"N={n} B={b} eager sdpa: {dense['ms_per_token']:.2f} ms/token, TTFT {dense['ttft_s']:.2f} s")
    for budget in args.budgets:
        for mode in args.modes:
            st = SqueezedAttention(centroid_fraction=CENTROID_FRACTION, observation_window=WINDOW,
                                   kmeans_iters=args.kmeans_iters, kmeans_seed=args.seed, budget=budget,
                                   budget_mode="topk" if mode == "topk" else "calibrated")
            r = eager_generate(model, index, prompt, args.new_tokens, clock, st)
            r.update(batch=b, attention=f"squeezed ({mode})", budget=budget,
                     speedup=dense["ms_per_token"] / r["ms_per_token"])
            ctx_doc["eager"].append(r)
            res.save()
            log(f"N={n} B={b} eager squeezed {mode} {budget:.0%}: {r['ms_per_token']:.2f} ms/token "
                f"({r['speedup']:.2f}x)")


def _dense_rows(args, model, compiled, questions: dict, sizes: dict, device, clock: Clock) -> dict:
    """Dense runner: TTFT with both prefill kernels (the faster is the baseline), graph decode, profile."""
    n, b, capacity = sizes["n"], sizes["b"], sizes["capacity"]
    dense_ttft: dict[int, dict[str, float]] = {}
    for impl in (("triton", "sdpa_flash") if device.type == "cuda" else ("triton",)):
        runner = StaticLlamaRunner(model, compiled, batch_size=b, capacity=capacity, attention="dense",
                                   dense_prefill=impl)
        for t_in, q in questions.items():
            try:
                dense_ttft.setdefault(t_in, {})[impl] = time_prefill(runner, q, clock, args.reps) * 1e3
            except Exception as exc:  # noqa: BLE001 - a failing baseline variant is reported, not fatal
                log(f"dense prefill {impl} failed: {type(exc).__name__}: {exc}")
        del runner
    base = reset_peak(device)
    runner = StaticLlamaRunner(model, compiled, batch_size=b, capacity=capacity, attention="dense")
    per_path = {}
    for path in args.decode_paths:  # the dense split-K decode has its own reduce: time it fused and split
        set_decode_path(path)
        try:
            per_path[path] = time_graph_decode(runner, questions[args.inputs[0]], args.new_tokens, clock)
        except Exception as exc:  # noqa: BLE001 - the other path still gives a baseline
            log(f"N={n} B={b} dense decode with the {path} kernels failed: {type(exc).__name__}: {exc}")
    set_decode_path("split")
    if not per_path:
        raise RuntimeError("dense decode failed with every decode path")
    best_path = min(per_path, key=lambda p_: per_path[p_]["ms_per_token"])
    dec = dict(per_path[best_path], decode_path=best_path,
               ms_per_token_by_path={p_: d["ms_per_token"] for p_, d in per_path.items()})
    dec["peak_gb"] = peak_gb(device, base)
    dec["peak_total_gb"] = total_peak_gb(device)
    set_decode_path(best_path)
    prof = attention_share(runner, device) if _profile(args, b) else {}
    set_decode_path("split")
    del runner
    free_bytes(device)
    log(f"N={n} B={b} dense: decode {dec['ms_per_token']:.2f} ms/token (graph {dec['graph']}); TTFT "
        + ", ".join(f"T={t}: " + "/".join(f"{k} {v:.1f} ms" for k, v in d.items()) for t, d in dense_ttft.items()))
    return {"kind": "dense", "batch": b, "ttft_ms": dense_ttft, "decode": dec, "profile": prof}


def _profile(args, b: int) -> bool:
    return not args.no_profile and not (args.quick and b > 1)


def _squeezed_rows(args, model, compiled, questions: dict, sizes: dict, rule: SelectionRule, dense: dict, device,
                   clock: Clock, wbytes: int, bw, path: str = "split", ttft: bool = True) -> list[dict]:
    """One squeezed runner: TTFT per input length (``ttft``), graph decode with the decode kernels of ``path``,
    profile; rows with speedups and ceilings."""
    cfg = model.config
    n, b, c, capacity = sizes["n"], sizes["b"], sizes["c"], sizes["capacity"]
    params = sum(p.numel() for p in model.parameters()) - model.model.embed_tokens.weight.numel()
    mode, budget = rule.mode, rule.budget
    rows = []
    base = reset_peak(device)
    runner = StaticLlamaRunner(model, compiled, batch_size=b, capacity=capacity, rule=rule)
    set_decode_path(path)
    for t_in, q in (questions.items() if ttft else ()):
        ms = time_prefill(runner, q, clock, args.reps) * 1e3
        kept = kept_fraction(runner, n)
        variants = dense["ttft_ms"].get(t_in) or {}
        best_impl, best = min(variants.items(), key=lambda kv: kv[1]) if variants else (None, None)
        ceil = prefill_ceiling(cfg, params, n, b, t_in, kept if kept is not None else budget, c)
        rows.append({"kind": "ttft", "attention": "squeezed", "batch": b, "input": t_in, "mode": mode,
                     "budget": budget, "kept": kept, "ms": ms, "dense_ms": best, "dense_impl": best_impl,
                     "speedup": None if best is None else best / ms, "ceiling": ceil["ceiling"], "flops": ceil})
        log(f"N={n} B={b} T={t_in} {mode} {budget:.0%}: TTFT {ms:.1f} ms vs {best} ms ({best_impl}), "
            f"FLOP ceiling {ceil['ceiling']:.2f}x, kept {kept}")
    dec = time_graph_decode(runner, questions[args.inputs[0]], args.new_tokens, clock)
    runner.decode_step()
    kept = kept_fraction(runner, n)
    prof = attention_share(runner, device) if _profile(args, b) else {}
    set_decode_path("split")
    peak, peak_total = peak_gb(device, base), total_peak_gb(device)
    del runner
    free_bytes(device)
    ceil = decode_ceiling(cfg, wbytes, bw, n, b, args.inputs[0] + args.new_tokens // 2,
                          kept if kept is not None else budget, c)
    dd = dense["decode"]
    row = {"kind": "decode", "attention": "squeezed", "batch": b, "mode": mode, "budget": budget, "kept": kept,
           "decode_path": path, "dense_decode_path": dd.get("decode_path", "split"),
           "ms": dec["ms_per_token"], "tps": dec["tokens_per_s"], "graph": dec["graph"],
           "graph_error": dec["graph_error"], "dense_graph": dd["graph"],
           "dense_ms": dd["ms_per_token"], "dense_tps": dd["tokens_per_s"],
           "speedup": dd["ms_per_token"] / dec["ms_per_token"], "ceiling": ceil["ceiling"], "bytes": ceil,
           "share": prof.get("share"), "dense_share": dense["profile"].get("share"), "profile": prof,
           "peak_gb": peak, "dense_peak_gb": dd["peak_gb"], "peak_total_gb": peak_total,
           "dense_peak_total_gb": dd["peak_total_gb"]}
    rows.append(row)
    log(f"N={n} B={b} decode {mode} {budget:.0%} ({path} kernels): {dec['ms_per_token']:.2f} ms/token vs {dd['ms_per_token']:.2f} = "
        f"{row['speedup']:.2f}x (byte ceiling {ceil['ceiling']:.2f}x), attention share {prof.get('share')}")
    return rows


def run_context(args, model, n: int, device: torch.device, res: Results, clock: Clock, wbytes: int, bw) -> None:
    cfg = model.config
    ctx_doc = res.context(n)
    gen = torch.Generator().manual_seed(args.seed + n)
    context = torch.randint(0, cfg.vocab_size, (1, n), generator=gen)
    t_max = max(args.inputs)
    # ---- build: dense prefill + k-means + calibration. Memory: KV cache, fp32 copy of the keys and its normalized
    # twin for k-means, MLP activations of the prefill (3 x N x MLP width).
    need = kv_bytes(cfg, n) + 2 * n * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4 \
        + 4 * n * cfg.intermediate_size * 2 + GB
    if need > free_bytes(device):
        skip(res, n, "whole context", f"index build needs ~{need / GB:.0f} GB, {free_bytes(device) / GB:.0f} GB free")
        return
    settings = SqueezedAttention(centroid_fraction=CENTROID_FRACTION, observation_window=WINDOW,
                                 kmeans_iters=args.kmeans_iters, kmeans_seed=args.seed)
    log(f"N={n}: building the index ({args.kmeans_init} init, {args.kmeans_iters} k-means iterations)")
    base = reset_peak(device)
    t = time.perf_counter()
    index = FixedContextIndex.build(model.model, context, attention=settings,
                                    calibration_budgets=tuple(args.budgets), kmeans_init=args.kmeans_init)
    clock.sync()
    build_s = time.perf_counter() - t
    build_peak = peak_gb(device, base)
    base = reset_peak(device)
    t = time.perf_counter()
    compiled = compile_fixed_context(index, budgets=tuple(args.budgets))
    clock.sync()
    compile_s = time.perf_counter() - t
    c = int(index.layers[0].centroids.shape[1])
    ctx_doc["build"] = {"build_s": build_s, "build_peak_gb": build_peak, "compile_s": compile_s,
                        "compile_peak_gb": peak_gb(device, base), "compiled_gb": round(compiled.nbytes() / GB, 2),
                        "clusters_per_head": c, "kmeans_init": args.kmeans_init, "kmeans_iters": args.kmeans_iters,
                        "thresholds": {str(k): v for k, v in compiled.thresholds.items()}}
    res.save()
    log(f"N={n}: index built in {build_s:.1f} s (peak +{build_peak} GB), compiled in {compile_s:.2f} s, "
        f"{c} clusters per head")

    # ---- static runners: TTFT and graph-captured decode
    capacity = t_max + args.new_tokens + 8
    for b in args.batches:
        tails = kv_bytes(cfg, capacity, b)
        act = 6 * b * t_max * cfg.intermediate_size * 2 + b * t_max * cfg.vocab_size * 4
        need = tails + act + 2 * GB
        if need > free_bytes(device):
            skip(res, n, f"static runners B={b}", f"need ~{need / GB:.0f} GB, {free_bytes(device) / GB:.0f} GB free")
            continue
        questions = {t: torch.randint(0, cfg.vocab_size, (b, t), generator=gen).to(device) for t in args.inputs}
        sizes = {"n": n, "b": b, "c": c, "capacity": capacity}
        try:
            dense = _dense_rows(args, model, compiled, questions, sizes, device, clock)
        except Exception as exc:  # noqa: BLE001 - without a baseline the squeezed rows of this batch are skipped
            skip(res, n, f"dense static runner B={b}", f"failed: {type(exc).__name__}: {str(exc)[:300]}")
            free_bytes(device)
            continue
        ctx_doc["static"].append(dense)
        res.save()
        for budget in args.budgets:
            for mode in args.modes:
                for i, path in enumerate(args.decode_paths):
                    try:
                        rows = _squeezed_rows(args, model, compiled, questions, sizes, SelectionRule(budget, mode),
                                              dense, device, clock, wbytes, bw, path=path, ttft=i == 0)
                    except Exception as exc:  # noqa: BLE001 - one failing configuration must not lose the others
                        set_decode_path("split")
                        skip(res, n, f"squeezed B={b} {mode} {budget} ({path} kernels)",
                             f"failed: {type(exc).__name__}: {str(exc)[:300]}")
                        free_bytes(device)
                        continue
                    ctx_doc["static"].extend(rows)
                    res.save()
    del compiled  # the eager runs read the index; its copy of the context is enough
    free_bytes(device)
    # ---- eager Transformers generate(), both attentions (needs the index; the DynamicCache copies the context).
    # After the static runs, so a time limit cuts the eager rows first.
    if not args.no_eager:
        for b in args.batches:
            need = kv_bytes(cfg, n + args.inputs[0] + args.new_tokens, b) * 1.05 + 2 * GB
            if need > free_bytes(device):
                skip(res, n, f"eager generate B={b}",
                     f"needs ~{need / GB:.0f} GB (a DynamicCache copy of the context per sequence), "
                     f"{free_bytes(device) / GB:.0f} GB free")
                continue
            q = torch.randint(0, cfg.vocab_size, (b, args.inputs[0]), generator=gen)
            prompt = torch.cat([context.expand(b, -1), q], 1).to(device)
            try:
                _eager_rows(args, model, index, prompt, b, n, ctx_doc, res, clock)
            except Exception as exc:  # noqa: BLE001 - one failing configuration must not lose the others
                skip(res, n, f"eager generate B={b}", f"failed: {type(exc).__name__}: {str(exc)[:300]}")

    del index
    free_bytes(device)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.render:
        print(render(json.loads(pathlib.Path(args.render).read_text())))
        return
    if args.tiny:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU (or --tiny for a CPU smoke run)")
    else:
        device = torch.device("cuda")
    import transformers
    import triton

    out = pathlib.Path(args.out) if args.out else pathlib.Path(__file__).parent / "results" / (
        "squeezed_attention_generation_tiny.json" if args.tiny else "squeezed_attention_generation.json")
    max_positions = max(args.contexts) + max(args.inputs) + args.new_tokens + 16
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "triton": triton.__version__, "transformers": transformers.__version__,
            "args": {k: v for k, v in vars(args).items()}, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                                                       time.gmtime())}
    if device.type == "cuda":
        meta["total_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / GB, 1)
        # k-means assignment is an fp32 batched matmul over 256 heads x N keys x C centroids: allow TF32 for it
        torch.backends.cuda.matmul.allow_tf32 = True
    res = Results(out, meta)
    log(f"device {meta['device']}; results -> {out}")
    t = time.perf_counter()
    model = make_model(args, device, max_positions)
    clock = Clock(device)
    clock.sync()
    wbytes = weight_bytes_per_token(model)
    bw = measure_copy_bandwidth(device)
    meta.update(model_init_s=time.perf_counter() - t, weight_bytes=wbytes, copy_bw=bw,
                rope=getattr(model.config, "rope_parameters", None) or getattr(model.config, "rope_theta", None))
    res.save()
    log(f"model ready in {meta['model_init_s']:.1f} s, {wbytes / 1e9:.2f} GB of weights read per token, copy "
        f"bandwidth {(bw or 0) / 1e12:.2f} TB/s")
    with torch.no_grad():
        for n in args.contexts:
            try:
                run_context(args, model, n, device, res, clock, wbytes, bw)
            except torch.cuda.OutOfMemoryError as exc:
                skip(res, n, "rest of the context", f"out of memory: {str(exc).splitlines()[0]}")
            print(render(res.doc), flush=True)
    res.doc["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    res.save()
    log(f"done; JSON at {out}")


if __name__ == "__main__":
    main()
