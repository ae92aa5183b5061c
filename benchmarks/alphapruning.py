"""AlphaPruning reproduction on SmolLM2-135M-Instruct, ESD speed against WeightWatcher, and a GPU ESD timing.

CPU (default)::

    python benchmarks/alphapruning.py [--quick] [--out benchmarks/results/alphapruning.json]

1. ESD speed: spectral metrics (eigenvalues + power-law fit) of every Linear layer of SmolLM2-135M (30 blocks x 7 +
   lm_head = 211 matrices), ours vs WeightWatcher's ``analyze()`` on the same modules, same process, same threads;
   plus α agreement between the two (same x_min scan).
2. Perplexity on held-out English text (``framework.datamodules.text_corpus``: Python documentation prose,
   non-overlapping 512-token windows) of the dense model and of uniform vs AlphaPruning allocation with magnitude
   and Wanda (``--pruners`` adds sparsegpt) at 50 / 60 / 70 % sparsity. Metrics are computed once from the dense
   weights; calibration = the first ``--calibration-windows`` windows of the train split (sequential, block by
   block). Held-out windows: the test split, then the val split, then train windows after the calibration ones
   (the corpus's test split alone has 11 windows = 5.6K tokens; 32 windows = 16,352 predicted tokens). No setting is
   tuned here (ε, mapping and metric are the public code's), so no validation split is needed; every row keeps its
   per-window NLL, and AlphaPruning vs uniform is compared by a paired bootstrap over the held-out windows.

GPU (torch only: no omegaconf / jsonargparse / wandb / datasets imported)::

    python benchmarks/alphapruning.py --gpu-esd --out benchmarks/results/alphapruning_gpu.json

   ESD metrics of a LLaMA-7B-shaped set of random matrices (32 blocks x (4 x 4096² + 3 x 11008x4096)).
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.evidence import format_interval, paired_bootstrap, verdict  # noqa: E402
from benchmarks.harness import benchmark_parser, markdown_table, write_results  # noqa: E402
from framework.callbacks.pruning.spectral_metrics import layer_spectral_metrics  # noqa: E402


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------- GPU ESD timing
def gpu_esd(args) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--gpu-esd needs CUDA (or --device cpu for a dry run)")
    generator = torch.Generator(device=device).manual_seed(0)
    hidden, ffn = args.hidden, round(args.hidden * 11008 / 4096)
    # q, k, v, o, gate, up (out x in) and down (hidden x ffn): LLaMA-7B at hidden = 4096.
    shapes = [(hidden, hidden)] * 4 + [(ffn, hidden)] * 2 + [(hidden, ffn)]
    blocks = 4 if args.quick else args.blocks
    weights = {f"layers.{b}.{j}": torch.randn(*shape, device=device, generator=generator, dtype=torch.float16)
               for b in range(blocks) for j, shape in enumerate(shapes)}
    # Warm-up (cuSOLVER / kernels), not timed.
    layer_spectral_metrics({"warm": weights["layers.0.0"]}, metric="alpha_peak")
    rows = []
    for metric in ("alpha_peak", "alpha"):
        _sync()
        start = time.perf_counter()
        metrics, _ = layer_spectral_metrics(weights, metric=metric)
        _sync()
        seconds = time.perf_counter() - start
        alphas = [m.alpha for m in metrics.values()]
        rows.append({"metric": metric, "matrices": len(weights), "seconds": seconds,
                     "seconds_per_matrix": seconds / len(weights), "alpha_min": min(alphas), "alpha_max": max(alphas)})
    print(markdown_table(rows))
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    return {"rows": rows, "gpu": name, "blocks": blocks, "hidden": hidden}


# ---------------------------------------------------------------------------------------------- CPU parts
def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def esd_speed(model, quick: bool) -> dict:
    import logging

    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    if quick:
        linears = dict(list(linears.items())[:21])
    weights = {n: m.weight.detach() for n, m in linears.items()}
    load_before = _load_average()
    results = {"matrices": len(weights), "torch_threads": torch.get_num_threads(), "load_before": load_before}
    # Wall time, and process CPU time: on a machine shared with other jobs the wall time is inflated by the load,
    # while CPU seconds / threads approximates the wall time the same work takes on idle cores.
    for metric in ("alpha_peak", "alpha"):
        start, cpu_start = time.perf_counter(), time.process_time()
        ours, _ = layer_spectral_metrics(weights, metric=metric)
        results[f"ours_{metric}_seconds"] = time.perf_counter() - start
        results[f"ours_{metric}_cpu_seconds"] = time.process_time() - cpu_start
        results[f"ours_{metric}"] = {n: m.alpha for n, m in ours.items()}
    try:
        import weightwatcher as ww
    except ImportError:
        results["weightwatcher"] = "not installed"
        return results
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    container = torch.nn.ModuleList(list(linears.values()))
    watcher = ww.WeightWatcher(model=container)
    start, cpu_start = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        details = watcher.analyze()
    results["weightwatcher_seconds"] = time.perf_counter() - start
    results["weightwatcher_cpu_seconds"] = time.process_time() - cpu_start
    results["weightwatcher_version"] = getattr(ww, "__version__", "?")
    ww_alpha = list(details["alpha"])
    ours_alpha = list(results["ours_alpha"].values())
    diffs = [abs(a - b) for a, b in zip(ours_alpha, ww_alpha)]
    results["alpha_vs_weightwatcher"] = {
        "layers_compared": len(diffs), "max_abs_diff": max(diffs), "median_abs_diff": sorted(diffs)[len(diffs) // 2],
        "fraction_within_0.1": sum(d <= 0.1 for d in diffs) / len(diffs),
    }
    results["speedup_alpha_peak_vs_ww"] = results["weightwatcher_seconds"] / results["ours_alpha_peak_seconds"]
    results["speedup_alpha_vs_ww"] = results["weightwatcher_seconds"] / results["ours_alpha_seconds"]
    results["cpu_speedup_alpha_peak_vs_ww"] = results["weightwatcher_cpu_seconds"] / results["ours_alpha_peak_cpu_seconds"]
    results["cpu_speedup_alpha_vs_ww"] = results["weightwatcher_cpu_seconds"] / results["ours_alpha_cpu_seconds"]
    results["load_after"] = _load_average()
    for key in ("ours_alpha_peak", "ours_alpha"):
        results.pop(key)
    return results


#: ε of the public LLaMA-7B scripts per base pruner (scripts/llama_7b.sh).
DEFAULT_EPSILON = {"magnitude": 0.3, "wanda": 0.2, "sparsegpt": 0.2}


def _epsilon(args, pruner: str) -> float:
    return args.epsilon if args.epsilon is not None else DEFAULT_EPSILON[pruner]


@torch.no_grad()
def window_nll(model, windows: torch.Tensor) -> list[float]:
    """Mean next-token NLL (nats) of each window ``[W, T]`` -> ``[W]`` (every window predicts T - 1 tokens)."""
    out = []
    for window in windows:
        ids = window[None]
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        out.append(float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                           ids[:, 1:].reshape(-1))))
    return out


def perplexity(model, windows: torch.Tensor) -> float:
    nll = window_nll(model, windows)
    return math.exp(sum(nll) / len(nll))


def held_out_windows(ids: torch.Tensor, split: torch.Tensor, *, calibration: int, count: int
                     ) -> tuple[torch.Tensor, list[str]]:
    """``count`` windows never used for calibration: test split, then val, then train after the calibration ones."""
    order = [("test", i) for i in (split == 2).nonzero().flatten().tolist()]
    order += [("val", i) for i in (split == 1).nonzero().flatten().tolist()]
    order += [("train", i) for i in (split == 0).nonzero().flatten().tolist()[calibration:]]
    if count > len(order):
        raise ValueError(f"--eval-windows {count} exceeds the {len(order)} windows held out from calibration")
    chosen = order[:count]
    return ids[[i for _, i in chosen]], [f"{name}:{i}" for name, i in chosen]


def allocation_comparisons(rows: list[dict]) -> list[dict]:
    """Per sparsity and pruner: perplexity ratio AlphaPruning / uniform with a paired bootstrap interval over the
    held-out windows (ratio = exp(mean per-window NLL difference); windows have equal token counts)."""
    out = []
    for row in rows:
        if row["allocation"] != "alpha":
            continue
        base = next((r for r in rows if r["allocation"] == "uniform" and r["sparsity"] == row["sparsity"]
                     and r["pruner"] == row["pruner"]), None)
        if base is None:
            continue
        interval = paired_bootstrap(row["window_nll"], base["window_nll"])
        ratio = {k: math.exp(getattr(interval, k)) for k in ("estimate", "low", "high")}
        out.append({"sparsity": row["sparsity"], "pruner": row["pruner"], "uniform_ppl": base["perplexity"],
                    "alpha_ppl": row["perplexity"], "ppl_ratio_alpha_over_uniform": ratio["estimate"],
                    "ratio_low_95": ratio["low"], "ratio_high_95": ratio["high"], "windows": interval.n,
                    "nll_difference": format_interval(interval),
                    "verdict": verdict(interval, higher_is_better=False, names=("AlphaPruning", "uniform"))})
    return out


def run_cpu(args) -> None:
    from framework.callbacks.pruning import alpha_prune, compute_layer_metrics, select_prunable_modules
    from framework.datamodules.text_corpus import generate_token_windows
    from framework.models.components.smollm2 import load_smollm2

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    dense = load_smollm2()
    load_seconds = time.perf_counter() - start
    print(f"SmolLM2 loaded in {load_seconds:.1f} s; load average {_load_average()}", flush=True)

    speed = esd_speed(dense, args.quick) if "speed" in args.parts else None
    if speed:
        print("ESD speed:", {k: v for k, v in speed.items()}, flush=True)

    rows = []
    extra = {}
    if "perplexity" in args.parts:
        data = generate_token_windows(source="python_docs", signature="python_docs", tokenizer="smollm2",
                                      seq_len=args.seq_len)
        ids = torch.as_tensor(data["input_ids"])
        split = torch.as_tensor(data["split"])
        calibration_windows = ids[split == 0][: args.calibration_windows]
        eval_windows, eval_names = held_out_windows(ids, split, calibration=args.calibration_windows,
                                                    count=args.eval_windows)
        extra["eval_windows"] = eval_names
        calibration = [{"input_ids": calibration_windows[i : i + 2]} for i in range(0, len(calibration_windows), 2)]
        extra["eval_tokens"] = int(eval_windows.numel())
        extra["eval_predicted_tokens"] = int(eval_windows.shape[0] * (eval_windows.shape[1] - 1))
        extra["calibration_tokens"] = int(calibration_windows.numel())
        start = time.perf_counter()
        dense_nll = [] if args.skip_dense else window_nll(dense, eval_windows)
        dense_ppl = math.exp(sum(dense_nll) / len(dense_nll)) if dense_nll else float("nan")
        extra["dense_perplexity"] = dense_ppl
        extra["dense_window_nll"] = dense_nll
        extra["eval_seconds"] = time.perf_counter() - start
        print(f"dense perplexity {dense_ppl:.3f} ({extra['eval_tokens']} tokens, {extra['eval_seconds']:.0f} s)",
              flush=True)
        modules = select_prunable_modules(dense)
        metrics, _ = compute_layer_metrics(modules, metric=args.metric)
        extra["alpha_range"] = [min(m.alpha for m in metrics.values()), max(m.alpha for m in metrics.values())]
        settings = {"metric": args.metric, "mapping": args.mapping, "seq_len": args.seq_len, "threads": args.threads,
                    "quick": args.quick, "epsilon": {p: _epsilon(args, p) for p in args.pruners}}
        for pruner in args.pruners:
            for sparsity in args.sparsities:
                for allocation in args.allocations:
                    model = copy.deepcopy(dense)
                    start = time.perf_counter()
                    report = alpha_prune(
                        model, target_sparsity=sparsity, epsilon=_epsilon(args, pruner), metric=args.metric,
                        pruner=pruner,
                        allocation=allocation, mapping=args.mapping,
                        calibration=calibration if pruner != "magnitude" else None,
                        metrics=metrics,
                    )
                    prune_seconds = time.perf_counter() - start
                    nll = window_nll(model, eval_windows)
                    ppl = math.exp(sum(nll) / len(nll))
                    row = {"sparsity": sparsity, "pruner": pruner, "allocation": allocation, "perplexity": ppl,
                           "window_nll": nll,
                           "achieved_sparsity": report.achieved_sparsity, "prune_seconds": prune_seconds,
                           "min_layer_sparsity": min(v.allocated for v in report.layers.values()),
                           "max_layer_sparsity": max(v.allocated for v in report.layers.values())}
                    rows.append(row)
                    print({k: v for k, v in row.items() if k != "window_nll"}, flush=True)
                    del model
                    # Written after every row: a long CPU run that is cut short still leaves its numbers.
                    write_results(args.out, name="alphapruning", rows=rows, speed=speed, load_seconds=load_seconds,
                                  settings=settings, load_average=_load_average(),
                                  comparisons=allocation_comparisons(rows), **extra)
    print()
    if rows:
        print(markdown_table(rows, ["sparsity", "pruner", "allocation", "perplexity", "achieved_sparsity",
                                    "min_layer_sparsity", "max_layer_sparsity", "prune_seconds"]))
        print()
        print(markdown_table(allocation_comparisons(rows), ["sparsity", "pruner", "uniform_ppl", "alpha_ppl",
                                                            "ppl_ratio_alpha_over_uniform", "ratio_low_95",
                                                            "ratio_high_95", "windows", "verdict"]))
    write_results(args.out, name="alphapruning", rows=rows, speed=speed, load_seconds=load_seconds,
                  settings={"metric": args.metric, "mapping": args.mapping, "seq_len": args.seq_len,
                            "threads": args.threads, "quick": args.quick,
                            "epsilon": {p: _epsilon(args, p) for p in args.pruners}},
                  load_average=_load_average(), comparisons=allocation_comparisons(rows), **extra)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--gpu-esd", action="store_true", help="time ESD metrics of LLaMA-7B-shaped matrices on CUDA")
    parser.add_argument("--parts", nargs="+", default=["speed", "perplexity"], choices=["speed", "perplexity"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.7, 0.6, 0.5])
    parser.add_argument("--pruners", nargs="+", default=["wanda", "magnitude"])
    parser.add_argument("--epsilon", type=float, default=None,
                        help="ε for every pruner (default: the public LLaMA-7B scripts' 0.3 magnitude, 0.2 Wanda/SparseGPT)")
    parser.add_argument("--metric", default="alpha_peak")
    parser.add_argument("--mapping", default="block", choices=["block", "layer"])
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--calibration-windows", type=int, default=8)
    parser.add_argument("--eval-windows", type=int, default=32,
                        help="held-out 512-token windows (32 = 16,352 predicted tokens: test, val, then unused train)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--allocations", nargs="+", default=["uniform", "alpha"], choices=["uniform", "alpha"],
                        help="rows to run (split one comparison over processes; the JSONs keep per-window NLLs)")
    parser.add_argument("--skip-dense", action="store_true", help="no dense-model perplexity (saves one evaluation)")
    parser.add_argument("--device", default="cuda", help="--gpu-esd device (cpu: dry run)")
    parser.add_argument("--blocks", type=int, default=32, help="--gpu-esd blocks")
    parser.add_argument("--hidden", type=int, default=4096, help="--gpu-esd hidden size (4096 = LLaMA-7B)")
    args = parser.parse_args()
    if args.gpu_esd:
        result = gpu_esd(args)
        write_results(args.out, name="alphapruning_gpu_esd", rows=result["rows"], gpu=result["gpu"],
                      blocks=result["blocks"], hidden=result["hidden"])
        return
    if args.quick:
        args.sparsities = [0.7]
        args.eval_windows = min(args.eval_windows, 2)
        args.calibration_windows = min(args.calibration_windows, 2)
    run_cpu(args)


if __name__ == "__main__":
    main()
