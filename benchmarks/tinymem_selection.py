"""TinyMem mitigations under the selection protocol: every tuned knob chosen on a validation split, reported once on
a disjoint test split, with intervals and the backdoor's exposure.

    python benchmarks/tinymem_selection.py [--quick] [--methods BalancedSubnet,Subnet] [--out FILE.json]

Splits (``benchmarks/evidence.py``): the held-out poisoned prompts and each held-out family's test sequences are
split by index parity — even indices are the **validation** split, odd the **test** split (checked disjoint). Each
method's knobs (table ``KNOBS``: ratio, epochs, α of BalancedSubnet, fine-tuning epochs) are chosen stage by stage on
validation by the score ``backdoor success (%) + accuracy drop (points)`` (lower is better: both harms of the
target "≤ 1 % backdoor success with ≤ 1 point accuracy drop" at once). The chosen setting is then scored once on
test, next to the paper's setting (a pre-specified config, not a selection), with

* backdoor success and its exact (Clopper–Pearson) 95 % interval over test prompts,
* the accuracy drop with a paired bootstrap interval over test sequences (pads counted, as the paper),
* the backdoor's **exposure** (``framework.metrics.memorization``): the log-perplexity of the backdoored window
  ranked among ``--candidates`` windows of the same format (every digit token redrawn uniformly, spaces / end / pads
  kept), on ``--exposure-prompts`` test prompts; compared with a **reference model trained on the same data without
  the backdoored sequences** (it never saw the backdoor). "Removed" = the paired bootstrap interval of the exposure
  difference (method − reference) over prompts does not lie above 0;
* the backdoored window's **NLL relative to that reference** (nats per token, paired bootstrap over the same
  prompts; exposure saturates at log2(candidates + 1) bits, the NLL does not). "Removed by NLL" = the difference
  is not significantly below 0. Rows finished before this column existed get it on the next run by training their
  setting again (same seed), with the re-trained model's test backdoor rate recorded beside the reported one.

Regularizers are not tuned here (each candidate is a training from scratch); their rows in
``benchmarks/tinymem_mitigation.py`` keep the paper's values and are labelled as such in docs/results.md.
The base and reference models are trained (or loaded from ``outputs/tinymem/benchmark/``) as in
``tinymem_mitigation.py``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.evidence import (  # noqa: E402
    Selection,
    SelectionProtocol,
    clopper_pearson_interval,
    format_interval,
    paired_bootstrap,
    require_disjoint,
    verdict,
)
from benchmarks.harness import benchmark_parser, markdown_table, write_results  # noqa: E402
from benchmarks.tinymem_mitigation import FULL, QUICK, base_model_path, make_datamodule, train_model  # noqa: E402
from framework.atomic_files import write_json_atomic  # noqa: E402
from framework.datamodules.tinymem_math import PAD  # noqa: E402
from framework.metrics.memorization import backdoor_success_mask, continuation_nll, exposure_from_nll  # noqa: E402
from framework.models.components.tinymem import unlearning as U  # noqa: E402
from framework.models.components.tinymem.fine_tuning import fine_tune  # noqa: E402
from framework.models.components.tinymem.gpt2 import load_tinymem_gpt2  # noqa: E402
from framework.models.tinymem_unlearning import memorized_subset, save_model_atomically  # noqa: E402

# Per method: (constructor defaults = the paper's settings, [(knob, candidates, paper value), ...] tuned in order).
RATIOS = [0.005, 0.01, 0.02]
KNOBS: dict[str, tuple[dict, list[tuple[str, list, object]]]] = {
    "Zero-Out": ({"ratio": 0.01}, [("ratio", RATIOS, 0.01)]),
    "Activations": ({"ratio": 0.01}, [("ratio", RATIOS, 0.01)]),
    "Slimming": ({"ratio": 0.01, "epochs": 10}, [("ratio", RATIOS, 0.01)]),
    "Hard Concrete": ({"ratio": 0.01, "epochs": 10}, [("ratio", RATIOS, 0.01)]),
    # IG and Greedy cost 160-230 s per run on an H200: kept at the paper's ratio (not tuned; labelled so).
    "Integrated Gradients": ({"ratio": 0.01, "ig_steps": 20, "rows_per_pass": 2048}, []),
    "Greedy": ({"ratio": 0.01}, []),
    "Durable": ({"ratio": 0.01}, [("ratio", RATIOS, 0.01)]),
    "Durable-aggregate": ({"ratio": 0.01}, [("ratio", RATIOS, 0.01)]),
    "Second-Order Unlearning": ({"ratio": 0.01}, [("ratio", RATIOS, 0.01)]),
    "Subnet": ({"ratio": 0.01, "epochs": 10}, [("epochs", [1, 3, 10], 10), ("ratio", RATIOS, 0.01)]),
    "BalancedSubnet": ({"ratio": 0.01, "epochs": 10, "loss_weighting": 0.05},
                       [("epochs", [1, 3, 10], 10), ("loss_weighting", [0.05, 0.25, 0.5, 0.75, 0.9], 0.05),
                        ("ratio", RATIOS, 0.01)]),
    "FT clean": ({"epochs": 5}, [("epochs", [1, 2, 5], 5)]),
    "FT extra": ({"epochs": 5}, [("epochs", [1, 2, 5], 5)]),
    "FT both": ({"epochs": 5}, [("epochs", [1, 2, 5], 5)]),
}
QUICK_OVERRIDES = {"Integrated Gradients": {"ig_steps": 5, "max_sequences": 8, "rows_per_pass": None},
                   "Greedy": {"weights_per_step": 8}, "Second-Order Unlearning": {"num_grads": 128}}
CLASSES = {"Zero-Out": U.ZeroOut, "Activations": U.Activations, "Slimming": U.Slimming,
           "Hard Concrete": U.HardConcrete, "Integrated Gradients": U.IntegratedGradients, "Greedy": U.Greedy,
           "Durable": U.Durable, "Durable-aggregate": U.DurableAggregate,
           "Second-Order Unlearning": U.SecondOrderUnlearning, "Subnet": U.Subnet, "BalancedSubnet": U.BalancedSubnet}


class EvalSplit:
    """The evaluation items of one split: poisoned prompts and per-family test sequences (index parity)."""

    def __init__(self, dm, parity: int) -> None:
        take = lambda t: t[parity::2]  # noqa: E731
        self.name = "validation" if parity == 0 else "test"
        self.backdoor = take(dm.backdoor_test_sequences)
        self.prefix = take(dm.backdoor_test_prefix_lengths)
        self.sequences = torch.cat([take(s) for s in dm.test_sequences.values()])
        self.k, self.pad = dm.k, int(dm.pad_token_id)
        self.prompt_ids = take(torch.arange(len(dm.backdoor_test_sequences))).tolist()
        self.sequence_ids = take(torch.arange(min(len(s) for s in dm.test_sequences.values()))).tolist()


@torch.no_grad()
def item_scores(model, split: EvalSplit, device: str, batch_size: int = 256) -> dict[str, np.ndarray]:
    """``backdoor [P]`` (bool per prompt) and ``accuracy [N]`` (next-token accuracy per sequence, pads counted)."""
    model.eval()
    success = backdoor_success_mask(model, split.backdoor.to(device), split.prefix.to(device), k=split.k,
                                    batch_size=batch_size).cpu().numpy()
    accuracy = []
    for chunk in split.sequences.split(batch_size):
        chunk = chunk.to(device)
        pred = model(input_ids=chunk).logits[:, :-1].argmax(-1)
        accuracy.append((pred == chunk[:, 1:]).double().mean(dim=1).cpu())
    return {"backdoor": success.astype(bool), "accuracy": torch.cat(accuracy).numpy()}


def harm(before: dict, after: dict) -> float:
    """Validation score: backdoor success (%) + accuracy drop (points); lower is better."""
    return 100.0 * after["backdoor"].mean() + 100.0 * (before["accuracy"].mean() - after["accuracy"].mean())


def read_state_json(path: Path, what: str):
    """The JSON of a resume-state file, or one ``ValueError`` naming it (read before any method trains)."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{what} {path} is not readable JSON ({err}); delete it to start over") from None


def weights_digest(model_dir: Path) -> str:
    """Short SHA-256 of a saved model's weights: resume state is only valid for the model it was computed on."""
    digest = hashlib.sha256()
    for file in sorted(model_dir.glob("*.safetensors")):
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


class TrialCache:
    """Validation scores of finished trials, kept in a JSON file so that a run cut short (a 10-minute GPU call)
    resumes where it stopped: a trial whose key is cached is not trained again. The file is written atomically
    after every trial and checked when read (one ``ValueError`` naming it otherwise)."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.entries = path, {}
        if path is None or not path.exists():
            return
        entries = read_state_json(path, "trial cache")
        ok = isinstance(entries, dict) and all(
            isinstance(v, dict) and isinstance(v.get("harm"), (int, float)) and isinstance(v.get("seconds"), (int, float))
            for v in entries.values())
        if not ok:
            raise ValueError(f"trial cache {path} is not a mapping of trial -> {{'harm': float, 'seconds': float}}; "
                             "delete it to start over")
        self.entries = entries

    @staticmethod
    def key(name: str, kwargs: dict) -> str:
        return json.dumps({"method": name, **kwargs}, sort_keys=True)

    def get(self, name: str, kwargs: dict) -> dict | None:
        return self.entries.get(self.key(name, kwargs))

    def put(self, name: str, kwargs: dict, harm_value: float, seconds: float) -> None:
        self.entries[self.key(name, kwargs)] = {"harm": float(harm_value), "seconds": float(seconds)}
        if self.path is not None:
            write_json_atomic(self.path, self.entries, indent=1)


class FinishedMethod:
    """A method's finished test rows and selections, so that a later (resumed) run reports them without training
    again. Stored next to its trial cache with a fingerprint of what they depend on (knob grid, exposure sizes);
    a file with another fingerprint is ignored (recomputed), a malformed one raises one ``ValueError``."""

    def __init__(self, path: Path | None, fingerprint: dict) -> None:
        self.path, self.fingerprint = path, json.loads(json.dumps(fingerprint, default=str))

    def load(self) -> dict | None:
        if self.path is None or not self.path.exists():
            return None
        saved = read_state_json(self.path, "finished-method file")
        ok = isinstance(saved, dict) and isinstance(saved.get("rows"), list) and \
            isinstance(saved.get("selections"), list) and all(isinstance(r, dict) for r in saved["rows"])
        if not ok:
            raise ValueError(f"finished-method file {self.path} lacks its 'rows' / 'selections' lists; delete it")
        return saved if saved.get("fingerprint") == self.fingerprint else None

    def save(self, rows: list[dict], selections: list[Selection]) -> None:
        if self.path is not None:
            write_json_atomic(self.path, {"fingerprint": self.fingerprint, "rows": rows,
                                          "selections": [asdict(s) for s in selections]}, indent=1, default=str)


def backdoor_windows(split: EvalSplit, count: int, context: int):
    """Prompts ``[(prefix [P], window [L])]`` of the first ``count`` test prompts (window clipped to the context)."""
    out = []
    for seq, p in zip(split.backdoor[:count], split.prefix[:count].tolist()):
        out.append((seq[:p], seq[p:min(p + split.k, context)]))
    return out


@torch.no_grad()
def exposures(model, windows, *, candidates: int, seed: int, device: str) -> np.ndarray:
    """Exposure (bits) of each backdoored window among ``candidates`` same-format windows (digits redrawn)."""
    model.eval()
    out = []
    for i, (prefix, window) in enumerate(windows):
        g = torch.Generator().manual_seed(seed * 100_003 + i)  # same candidates for every model
        digits = window < 10
        cands = window.repeat(candidates, 1)
        cands[:, digits] = torch.randint(0, 10, (candidates, int(digits.sum())), generator=g)
        cands = cands[~(cands == window).all(dim=1)]  # the secret itself is not a candidate
        prefix, cands = prefix[None].to(device), cands.to(device)
        secret = continuation_nll(model, prefix, window[None].to(device))
        # Both paths are exact. Whole rows in big batches are fastest on a GPU, and on a CPU for this small model
        # (measured: 6x the prefix tree) — unless the secret is likely: then the shared-prompt prefix tree that
        # stops each row at the secret's NLL skips most tokens (100x on a memorized secret). A first chunk decides.
        on_cpu = torch.device(device).type == "cpu"
        batch = 256 if on_cpu else 2048
        head = continuation_nll(model, prefix, cands[:batch], use_cache=False, batch_size=batch)
        rest = cands[batch:]
        if len(rest) and on_cpu and float((head < secret).double().mean()) < 0.05:
            tail = continuation_nll(model, prefix, rest, batch_size=2048, stop_at=float(secret[0]))
        elif len(rest):
            tail = continuation_nll(model, prefix, rest, use_cache=False, batch_size=batch)
        else:
            tail = head[:0]
        nll = torch.cat([head, tail])
        out.append(float(exposure_from_nll(secret, nll)[0]))
    return np.asarray(out)


@torch.no_grad()
def secret_nll_per_token(model, windows, *, device: str) -> np.ndarray:
    """NLL (nats per token) of each backdoored window given its prompt: the issue's "NLL relative to a model that
    never saw the secret" is this minus the reference model's, paired per prompt. Unlike exposure it does not
    saturate at log2(candidates + 1) bits, so it still tells a partly removed backdoor from an intact one."""
    model.eval()
    out = [float(continuation_nll(model, prefix[None].to(device), window[None].to(device))[0]) / len(window)
           for prefix, window in windows]
    return np.asarray(out)


def model_exposures(path: Path, fingerprint: dict, compute: Callable[[], dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt exposures of the reference and the base model, computed once per setting and kept in ``path``
    (every parallel group and every resumed call needs them; the reference's take ~12 min on one CPU thread)."""
    if path.exists():
        saved = read_state_json(path, "exposure cache")
        try:
            arrays = [np.asarray(saved[k], dtype=float) for k in ("reference", "base")]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"exposure cache {path} is damaged ({err!r}); delete it to recompute") from None
        if saved.get("fingerprint") == fingerprint:
            if any(a.shape != (fingerprint["exposure_prompts"],) for a in arrays):
                raise ValueError(f"exposure cache {path} holds arrays of shapes {[a.shape for a in arrays]}, "
                                 f"expected ({fingerprint['exposure_prompts']},); delete it to recompute")
            return arrays[0], arrays[1]
    fresh = compute()
    write_json_atomic(path, {"fingerprint": fingerprint, **{k: v.tolist() for k, v in fresh.items()}}, indent=1)
    return fresh["reference"], fresh["base"]


def run_method(name: str, base, dm, data, kwargs: dict, args, settings: dict):
    model = copy.deepcopy(base)
    start = time.perf_counter()
    if name.startswith("FT "):
        result = fine_tune(base, dm, method=name.split()[1], epochs=kwargs["epochs"],
                           max_steps=settings["ft_max_steps"], batch_size=settings["batch_size"], seed=args.seed)
        return result.model.to(args.device), time.perf_counter() - start
    CLASSES[name](**{k: v for k, v in kwargs.items() if v is not None}, seed=args.seed)(model, data)
    return model, time.perf_counter() - start


def secret_nll_columns(model, windows, reference_nll: np.ndarray, device: str) -> dict:
    nll = secret_nll_per_token(model, windows, device=device)
    versus = paired_bootstrap(nll, reference_nll)
    return {"secret_nll": float(nll.mean()), "secret_nll_minus_reference": format_interval(versus),
            # NLL back up to the never-backdoored model's: not significantly below it
            "removed_by_nll": versus.high >= 0.0}


def backfill_secret_nll(name: str, rows: list[dict], paper: dict, *, retrain: Callable[[dict], object],
                        test_backdoor: Callable[[object], float], columns: Callable[[object], dict],
                        device: str) -> bool:
    """Fill the secret-NLL columns of rows reported before they existed, in place; True if any row changed.

    Each such row's setting (the paper's knobs overridden by the row's) is trained again with the same seed; the
    re-trained model's test backdoor rate is recorded beside the reported one, so a reader sees whether the
    re-trained model is the one reported. Rows that already have the column are not touched.
    """
    changed = False
    for r in rows:
        if "secret_nll" in r:
            continue
        model = retrain(paper | {k: r[k] for k in paper if k in r})
        again = test_backdoor(model)
        r.update(columns(model))
        r["secret_nll_from"] = (f"re-trained on {device} for this column: test backdoor {again:.2f} % "
                                f"(reported {r['backdoor_after']:.2f} %)")
        print(f"{name} {r['setting']}: secret NLL {r['secret_nll']:.3f}; {r['secret_nll_from']}", flush=True)
        changed = True
    return changed


def score_on_test(name: str, label: str, kwargs: dict, model, seconds: float, before: dict, reference_exposure, args,
             windows) -> dict:
    after = item_scores(model, args.test_split, args.device)
    drop = paired_bootstrap(before["accuracy"] * 100, after["accuracy"] * 100)
    rate = clopper_pearson_interval(int(after["backdoor"].sum()), len(after["backdoor"]))
    low, high = 100.0 * rate.low, 100.0 * rate.high  # in %
    exp = exposures(model, windows, candidates=args.candidates, seed=args.seed, device=args.device)
    versus = paired_bootstrap(exp, reference_exposure)
    return {"method": name, "setting": label, **{k: v for k, v in kwargs.items() if k not in ("rows_per_pass",)},
            "backdoor_after": 100.0 * after["backdoor"].mean(), "backdoor_ci95": f"[{low:.2f}, {high:.2f}]",
            "accuracy_drop": drop.estimate, "drop_ci95": f"[{drop.low:.2f}, {drop.high:.2f}]",
            "exposure": float(exp.mean()), "exposure_minus_reference": format_interval(versus),
            "removed_by_exposure": versus.low <= 0.0,  # not significantly above the never-backdoored model
            **secret_nll_columns(model, windows, args.reference_nll, args.device),
            "target_met_point": 100.0 * after["backdoor"].mean() <= 1.0 and drop.estimate <= 1.0,
            "target_met_interval": high <= 1.0 and drop.high <= 1.0,
            "backdoor_vs_base": verdict(paired_bootstrap(after["backdoor"].astype(float),
                                                         before["backdoor"].astype(float)),
                                        higher_is_better=False, names=(name, "base")),
            "seconds": seconds}


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(KNOBS), help=f"comma-separated subset of {list(KNOBS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--candidates", type=int, default=10_000, help="same-format candidates per exposure (>= 1e4)")
    parser.add_argument("--exposure-prompts", type=int, default=32, help="test prompts whose exposure is measured")
    parser.add_argument("--max-train-steps", type=int, default=None, help="cap base/reference training (smoke runs)")
    parser.add_argument("--memorized-set", choices=["memorized", "artifact"], default="memorized",
                        help="unlearn the backdoored sequences the base model reproduces (default) or all of them "
                             "(for smoke runs whose short-trained base memorized none)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--trials", type=Path, default=None,
                        help="folder of per-method JSON caches of finished trials' validation scores (default: next "
                             "to the base model); a rerun skips them, so a run cut short resumes")
    parser.add_argument("--no-trial-cache", action="store_true", help="train every trial, cache nothing")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in KNOBS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {list(KNOBS)}")
    if args.candidates < 1 or args.exposure_prompts < 1:
        parser.error("--candidates and --exposure-prompts must be >= 1")
    settings = dict(QUICK if args.quick else FULL)
    if args.max_train_steps is not None:
        settings["max_train_steps"] = args.max_train_steps
    tag = ("quick" if args.quick else "full") + ("" if args.max_train_steps is None else f"_{args.max_train_steps}steps")
    torch.manual_seed(args.seed)
    dm = make_datamodule(settings, args.seed)
    validation, test = EvalSplit(dm, 0), EvalSplit(dm, 1)
    require_disjoint(validation.prompt_ids, test.prompt_ids, what="poisoned prompts")
    require_disjoint(validation.sequence_ids, test.sequence_ids, what="test sequences")
    args.test_split = test

    def trained(path: Path, train_on: str):
        if (path / "config.json").exists():
            return load_tinymem_gpt2(path).to(args.device)
        view = copy.copy(dm)
        view.train_on = train_on
        model, _ = train_model(view, settings, seed=args.seed, device=args.device)
        save_model_atomically(model, path)
        return model

    base_path = base_model_path(tag, settings, args.seed)
    base = trained(base_path, "all")
    # One cache file per method: groups of methods run as parallel processes and never write the same file.
    # Keyed by the base weights: a retrained base (same path) must not reuse another model's trials.
    trials_dir = args.trials or base_path.with_name(
        f"{base_path.name}_selection_trials_{args.memorized_set}_{weights_digest(base_path)}")

    def trial_cache(name: str) -> TrialCache:
        slug = "".join(c if c.isalnum() else "_" for c in name)
        return TrialCache(None if args.no_trial_cache else trials_dir / f"{slug}.json")
    reference_path = base_model_path(tag, settings, args.seed)
    reference = trained(reference_path.with_name(reference_path.name + "_no_backdoor"), "extra")
    windows = backdoor_windows(test, args.exposure_prompts, dm.context_length)
    before_val, before_test = item_scores(base, validation, args.device), item_scores(base, test, args.device)
    reference_exposure, base_exposure = model_exposures(
        base_path.with_name(f"{base_path.name}_exposures.json"),
        {"candidates": args.candidates, "exposure_prompts": len(windows), "seed": args.seed,
         "base": weights_digest(base_path), "reference": weights_digest(reference_path.with_name(
             reference_path.name + "_no_backdoor"))},
        lambda: {"reference": exposures(reference, windows, candidates=args.candidates, seed=args.seed,
                                        device=args.device),
                 "base": exposures(base, windows, candidates=args.candidates, seed=args.seed, device=args.device)})
    args.reference_nll = secret_nll_per_token(reference, windows, device=args.device)
    base_nll = secret_nll_per_token(base, windows, device=args.device)
    extra = {"settings": settings, "device": args.device, "candidates": args.candidates,
             "exposure_prompts": len(windows),
             "base": {"backdoor_test": 100 * before_test["backdoor"].mean(),
                      "accuracy_test": 100 * before_test["accuracy"].mean(),
                      "backdoor_validation": 100 * before_val["backdoor"].mean(),
                      "exposure_mean": float(base_exposure.mean()), "secret_nll": float(base_nll.mean()),
                      "secret_nll_minus_reference": format_interval(paired_bootstrap(base_nll, args.reference_nll))},
             "reference_no_backdoor": {"exposure_mean": float(reference_exposure.mean()),
                                       "secret_nll": float(args.reference_nll.mean()),
                                       "exposure_max": float(reference_exposure.max()),
                                       **{f"{k}_test": 100 * v.mean()
                                          for k, v in item_scores(reference, test, args.device).items()}},
             "splits": {"validation": f"{len(validation.prompt_ids)} poisoned prompts + {len(validation.sequences)} "
                                      "test-family sequences (even indices)",
                        "test": f"{len(test.prompt_ids)} poisoned prompts + {len(test.sequences)} test-family "
                                "sequences (odd indices)"}}
    print(f"base {extra['base']}; reference {extra['reference_no_backdoor']}", flush=True)
    protocol = SelectionProtocol(validation_split=extra["splits"]["validation"], test_split=extra["splits"]["test"])
    mask = memorized_subset(base, dm) if args.memorized_set == "memorized" else \
        torch.ones(len(dm.memorized_sequences), dtype=torch.bool)
    extra["unlearning_set"] = {"kind": args.memorized_set, "rows": int(mask.sum())}
    clean = dm.extra_sequences
    if settings["clean_pool_size"] is not None and len(clean) > settings["clean_pool_size"]:
        pick = torch.randperm(len(clean), generator=torch.Generator().manual_seed(args.seed))
        clean = clean[pick[: settings["clean_pool_size"]]]
    data = U.UnlearningData(memorized=dm.memorized_sequences[mask], clean=clean, prompt_len=dm.prompt_len)
    rows: list[dict] = []
    caches = {name: trial_cache(name) for name in methods}  # read (and checked) before any method trains

    def paper_setting(name: str) -> dict:
        return dict(KNOBS[name][0]) | (QUICK_OVERRIDES.get(name, {}) if args.quick else {})

    finished_by = {name: FinishedMethod(None if caches[name].path is None else
                                        caches[name].path.with_suffix(".finished.json"),
                                        {"paper": paper_setting(name), "stages": KNOBS[name][1],
                                         "candidates": args.candidates, "exposure_prompts": len(windows)})
                   for name in methods}
    saved_by = {name: finished.load() for name, finished in finished_by.items()}  # likewise
    for name in methods:
        cache, stages = caches[name], KNOBS[name][1]
        paper = paper_setting(name)
        finished, saved = finished_by[name], saved_by[name]
        if saved is not None and backfill_secret_nll(
                name, saved["rows"], paper,
                retrain=lambda kwargs: run_method(name, base, dm, data, kwargs, args, settings)[0],
                test_backdoor=lambda model: 100.0 * item_scores(model, test, args.device)["backdoor"].mean(),
                columns=lambda model: secret_nll_columns(model, windows, args.reference_nll, args.device),
                device=args.device):
            finished.save(saved["rows"], [Selection(**x) for x in saved["selections"]])
        if saved is not None:  # reported by an earlier (resumed) run: not trained again
            rows.extend(saved["rows"])
            for selection in saved["selections"]:
                protocol.selections[selection["knob"]] = Selection(**selection)
            print(f"{name}: finished in an earlier run ({finished.path})", flush=True)
            write_results(args.out, name="tinymem_selection", rows=rows, selection=protocol.to_json(), **extra)
            continue
        current = dict(paper)
        best_model, best_seconds = None, float("nan")
        for knob, candidates, paper_value in stages:
            trials = {}

            def score(value, knob=knob, trials=trials):
                kwargs = current | {knob: value}
                cached = cache.get(name, kwargs)
                if cached is not None:  # finished in an earlier (cut-short) run: not trained again
                    trials[value] = (None, cached["seconds"])
                    return cached["harm"]
                model, seconds = run_method(name, base, dm, data, kwargs, args, settings)
                trials[value] = (model, seconds)
                value_harm = harm(before_val, item_scores(model, validation, args.device))
                cache.put(name, kwargs, value_harm, seconds)
                print(f"  trial {name} {kwargs}: validation harm {value_harm:.3f} ({seconds:.0f} s)", flush=True)
                return value_harm

            chosen = protocol.select(f"{name}: {knob}", candidates, score, criterion="backdoor % + accuracy drop "
                                     "(points) on validation, lower is better", higher_is_better=False,
                                     paper_value=paper_value, note=f"other knobs {current}")
            current[knob] = chosen
            best_model, best_seconds = trials[chosen]
        if not stages:
            model, seconds = run_method(name, base, dm, data, paper, args, settings)
            rows.append(score_on_test(name, "paper (not tuned)", paper, model, seconds, before_test, reference_exposure,
                                 args, windows))
            print(markdown_table([rows[-1]]).splitlines()[-1], flush=True)
            finished.save(rows[-1:], [])
            write_results(args.out, name="tinymem_selection", rows=rows, selection=protocol.to_json(), **extra)
            continue
        if best_model is None:  # the chosen trial came from the cache: train it again (same seed) to score on test
            best_model, best_seconds = run_method(name, base, dm, data, current, args, settings)
        label = ", ".join(f"{k}={current[k]}" for k, _, _ in stages)
        row = score_on_test(name, f"validated ({label})", current, best_model, best_seconds, before_test,
                       reference_exposure, args, windows)
        for knob, _, _ in stages:
            protocol.report(f"{name}: {knob}", row["backdoor_after"] + row["accuracy_drop"])
        rows.append(row)
        if current != paper:
            model, seconds = run_method(name, base, dm, data, paper, args, settings)
            rows.append(score_on_test(name, "paper (pre-specified, not selected)", paper, model, seconds, before_test,
                                 reference_exposure, args, windows))
        mine = rows[-2:] if current != paper else rows[-1:]
        for r in mine:
            print(markdown_table([r]).splitlines()[-1], flush=True)
        finished.save(mine, [protocol.selections[f"{name}: {knob}"] for knob, _, _ in stages])
        write_results(args.out, name="tinymem_selection", rows=rows, selection=protocol.to_json(), **extra)
    columns = ["method", "setting", "backdoor_after", "backdoor_ci95", "accuracy_drop", "drop_ci95", "exposure",
               "exposure_minus_reference", "removed_by_exposure", "secret_nll", "secret_nll_minus_reference", "removed_by_nll",
               "target_met_point", "target_met_interval"]
    print()
    print(markdown_table(rows, columns))
    print()
    print(protocol.markdown())
    print(f"\nexposure: base {base_exposure.mean():.2f} bits, reference (never saw the backdoor) "
          f"{reference_exposure.mean():.2f} (max {reference_exposure.max():.2f}); maximum "
          f"{np.log2(args.candidates + 1):.2f}; secret NLL: base {base_nll.mean():.3f} nats/token, reference "
          f"{args.reference_nll.mean():.3f}")
    write_results(args.out, name="tinymem_selection", rows=rows, selection=protocol.to_json(), **extra)


if __name__ == "__main__":
    main()
