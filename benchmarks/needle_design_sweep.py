"""Dense-only sweep of needle designs on design contexts: which layout does SmolLM2-135M-Instruct answer?

    python benchmarks/needle_design_sweep.py --length 2048 --contexts 6 \
        --design current '{"single": 3, "multi_groups": [3], "qa_facts": 2, "depth_jitter": true, "answer_hint": true}'

Each design is a JSON object of `build_needle_context` options; contexts use seeds 900, 901, ... (the design seeds of
issue 21, never used for validation or test; source c mod 3 of `offline_texts.TEXT_SOURCES`). One prefill per
context, then each question teacher-forced in one pass over a copy of the context cache: greedy exact match (every
answer position's argmax is the gold token). Prints per-task counts and, with --show-misses, every miss.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framework.atomic_files import write_json_atomic  # noqa: E402
from framework.datamodules.long_context_qa import SmolLM2Tokenizer  # noqa: E402
from framework.datamodules.needle_retrieval import build_needle_context  # noqa: E402
from framework.datamodules.offline_texts import TEXT_SOURCES, source_paragraphs  # noqa: E402


def parse_designs(pairs: list[list[str]]) -> dict[str, dict]:
    """``{name: options}`` from the --design pairs; unknown option names are one clear error."""
    import inspect

    allowed = set(inspect.signature(build_needle_context).parameters) - {"tokenizer", "context_tokens", "seed",
                                                                          "paragraphs", "source"}
    designs = {}
    for name, text in pairs:
        try:
            design = json.loads(text)
        except json.JSONDecodeError as err:
            raise SystemExit(f"error: --design {name}: not a JSON object ({err})") from None
        if not isinstance(design, dict):
            raise SystemExit(f"error: --design {name}: expected a JSON object of build_needle_context options")
        unknown = sorted(set(design) - allowed)
        if unknown:
            raise SystemExit(f"error: --design {name}: unknown options {unknown}; allowed: {sorted(allowed)}")
        designs[name] = design
    return designs


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--length", type=int, default=2048)
    p.add_argument("--contexts", type=int, default=6)
    p.add_argument("--first-seed", type=int, default=900)
    p.add_argument("--design", nargs=2, action="append", metavar=("NAME", "JSON"), required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--show-misses", action="store_true")
    p.add_argument("--out", default=None, help="JSON file of the counts")
    args = p.parse_args(argv)
    designs = parse_designs(args.design)
    from transformers import DynamicCache

    from framework.models.components.squeezed.backbones import load_backbone

    torch.set_num_threads(args.threads)
    tok = SmolLM2Tokenizer()
    model = load_backbone("smollm2").eval()
    result = {}
    for name, design in designs.items():
        counts = {"single": [0, 0], "multi": [0, 0], "qa": [0, 0]}
        t0 = time.time()
        for c in range(args.contexts):
            src = TEXT_SOURCES[c % len(TEXT_SOURCES)]
            ctx = build_needle_context(tok, context_tokens=args.length, seed=args.first_seed + c,
                                       paragraphs=source_paragraphs(src), source=src, **design)
            with torch.no_grad():
                cache = DynamicCache()
                model(torch.tensor([ctx.context_ids]), past_key_values=cache, use_cache=True)
                for q in ctx.questions:
                    ids = list(q.question_ids) + list(q.answer_ids[:-1])
                    logits = model(torch.tensor([ids]), past_key_values=copy.deepcopy(cache), use_cache=True).logits[0]
                    pred = logits[-len(q.answer_ids):].argmax(-1).tolist()
                    ok = pred == list(q.answer_ids)
                    counts[q.task][0] += ok
                    counts[q.task][1] += 1
                    if args.show_misses and not ok:
                        print(f"  {name} c{c} {q.task} depth {q.depth:.2f}: gold {q.answer_text}, "
                              f"argmax {tok.decode(pred)!r}", flush=True)
        solved = sum(v[0] for v in counts.values())
        asked = sum(v[1] for v in counts.values())
        result[name] = {"design": design, "solved": solved, "asked": asked, "by_task": counts}
        print(f"{name}: {solved}/{asked} = {solved / asked:.0%}  "
              + "  ".join(f"{k} {a}/{b}" for k, (a, b) in counts.items()) + f"  ({time.time() - t0:.0f} s)", flush=True)
    if args.out:
        write_json_atomic(args.out, result, indent=1)
    return result


if __name__ == "__main__":
    main()
