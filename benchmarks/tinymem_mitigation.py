"""TinyMem mitigation table: the 17 methods on a 2-layer GPT-2 with a backdoor on multiplicative sequences.

    python benchmarks/tinymem_mitigation.py [--quick] [--checkpoint CKPT] [--out benchmarks/results/tinymem_mitigation.json]

Reference (research note A7/A10, the paper's CSV): ``mult`` data, backdoor trigger "100", 2-layer GPT-2 (width 128,
4 heads, ReLU, vocab 14, context 150), 50 epochs of AdamW 1e-3 / wd 0.1 / betas (0.9, 0.98), batch 128: backdoor
success ≈ 98.3 %, mean accuracy over the five families ≈ 89.64 % (pads counted); BalancedSubnet at 1 % → 0 % with
accuracy 89.42 %. Targets: BalancedSubnet backdoor success ≤ 1 % with accuracy drop ≤ 1 point; the ranking of the
paper (unlearning faster and more effective than fine-tuning; regularizers slow and weak).

One row per method: backdoor success and mean accuracy before / after, and the method's wall-clock time.
- Regularizers (spectral norm, loss truncation, example-tied dropout): a model trained from scratch with the
  regularizer, same data and schedule as the base model; "before" = the unregularized base model; time = training.
- Fine-tuning (clean, extra, both): ``framework.models.components.tinymem.fine_tuning.fine_tune`` from the base model.
- Unlearning (11 methods): ``framework.models.components.tinymem.unlearning`` on the backdoored training sequences the base
  model reproduces; clean pool = all other training sequences (the memorized ones excluded), subsampled in --quick.

The base model is trained here (cached under ``outputs/tinymem/benchmark/``) unless ``--checkpoint`` gives a trained
one (e.g. ``outputs/tinymem/backdoor_2layer.ckpt`` from ``configs/tinymem/train_mult_backdoor_2layer.yaml``).
``--quick`` shrinks data (10-number sequences, 64-token context, memorization window 20 + 20), width (64) and schedule
(1500 steps, lr 2e-3; all recorded in the JSON) so that the table runs on 2 CPU cores; the
full settings are the paper's and need a GPU for the base and regularized trainings (not run here). Rows are written
to the JSON as they finish, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import benchmark_parser, markdown_table, write_results  # noqa: E402
from framework.datamodules.tinymem_math import TinyMemMath  # noqa: E402
from framework.models.components.tinymem import unlearning as U  # noqa: E402
from framework.models.components.tinymem.fine_tuning import fine_tune  # noqa: E402
from framework.models.components.tinymem.gpt2 import load_tinymem_gpt2  # noqa: E402
from framework.models.components.tinymem.regularizers import (  # noqa: E402
    ExampleTiedDropout,
    LossTruncation,
    SpectralNormRegularizer,
)
from framework.models.tinymem_lm import TinyMemLM, tinymem_report  # noqa: E402
from framework.models.tinymem_unlearning import memorized_subset, save_model_atomically  # noqa: E402

FULL = dict(num_main=20000, num_extra=3000, num_test=1000, length=20, context_length=150, prompt_len=50, k=50,
            n_embd=128, n_head=4, n_layers=2, batch_size=128, lr=1e-3, train_epochs=50, max_train_steps=None,
            ft_epochs=5, ft_max_steps=None, clean_pool_size=None, loss_truncation_window=10000)
# --quick: 10-number sequences in a 64-token context (memorization window 20 + 20), width 64, lr 2e-3, 1500 steps.
QUICK = dict(num_main=4000, num_extra=600, num_test=100, length=10, context_length=64, prompt_len=20, k=20,
             n_embd=64, n_head=4, n_layers=2, batch_size=64, lr=2e-3, train_epochs=1000, max_train_steps=1500,
             ft_epochs=1, ft_max_steps=40, clean_pool_size=1000, loss_truncation_window=500)


def unlearning_methods(quick: bool, subnet_epochs: int | None = None) -> list[U.UnlearningMethod]:
    """The 11 methods at the paper's best ratio for this setting (1 %), with the note's hyper-parameters.

    ``subnet_epochs`` overrides the epochs of Subnet and BalancedSubnet (the paper's grid is {1, 10, 30}).
    """
    if quick:
        return [
            U.ZeroOut(ratio=0.01), U.Activations(ratio=0.01),
            U.Slimming(ratio=0.01, epochs=10), U.HardConcrete(ratio=0.01, epochs=10),
            U.IntegratedGradients(ratio=0.01, ig_steps=5, max_sequences=8),
            U.Greedy(ratio=0.01, weights_per_step=8), U.Durable(ratio=0.01), U.DurableAggregate(ratio=0.01),
            U.SecondOrderUnlearning(ratio=0.01, num_grads=128),
            U.Subnet(ratio=0.01, epochs=subnet_epochs or 10), U.BalancedSubnet(ratio=0.01, epochs=subnet_epochs or 5),
        ]
    return [
        U.ZeroOut(ratio=0.01), U.Activations(ratio=0.01), U.Slimming(ratio=0.01, epochs=10),
        U.HardConcrete(ratio=0.01, epochs=10),
        # all (position, scale) rows of a sequence in one pass: the same sums (up to float order), ~8x fewer launches
        U.IntegratedGradients(ratio=0.01, ig_steps=20, rows_per_pass=2048),
        U.Greedy(ratio=0.01), U.Durable(ratio=0.01), U.DurableAggregate(ratio=0.01),
        U.SecondOrderUnlearning(ratio=0.01), U.Subnet(ratio=0.01, epochs=subnet_epochs or 10),
        U.BalancedSubnet(ratio=0.01, epochs=subnet_epochs or 10),
    ]


def train_model(dm: TinyMemMath, settings: dict, regularizer=None, seed: int = 0, device: str = "cpu",
                max_minutes: float | None = None):
    """Train a TinyMemLM on ``dm`` with the paper's optimiser; returns ``(GPT2LMHeadModel on device, seconds)``.

    ``max_minutes`` stops training early (Lightning's ``max_time``); the JSON records the steps actually taken.
    """
    import lightning.pytorch as pl

    pl.seed_everything(seed, verbose=False)
    lr = settings["lr"]
    lm = TinyMemLM(n_layers=settings["n_layers"], n_embd=settings["n_embd"], n_head=settings["n_head"],
                   context_length=settings["context_length"], prompt_len=settings["prompt_len"], k=settings["k"],
                   regularizer=regularizer, init_seed=seed,
                   optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.1, betas=(0.9, 0.98)))
    trainer = pl.Trainer(max_epochs=settings["train_epochs"], max_steps=settings["max_train_steps"] or -1,
                         accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1,
                         max_time=None if max_minutes is None else {"minutes": max_minutes},
                         logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(lm, datamodule=dm)
    seconds = time.perf_counter() - start
    # Lightning moves the module back to the CPU at teardown; evaluation and unlearning run on ``device``.
    model = lm.model.to(device).eval()
    model.trained_steps = trainer.global_step
    return model, seconds


def make_datamodule(settings: dict, seed: int) -> TinyMemMath:
    """The backdoored ``mult`` data of ``settings`` (QUICK or FULL), prepared and set up for fitting."""
    cache = Path(os.environ.get("FRAMEWORK_CACHE_DIR", "outputs/cache"))
    dm = TinyMemMath(family="mult", artifact="backdoor", num_main=settings["num_main"],
                     num_extra=settings["num_extra"], num_test=settings["num_test"], length=settings["length"],
                     context_length=settings["context_length"], prompt_len=settings["prompt_len"], k=settings["k"],
                     batch_size=settings["batch_size"], seed=seed, cache_dir=str(cache))
    dm.prepare_data()
    dm.setup("fit")
    return dm


def base_model_path(tag: str, settings: dict, seed: int) -> Path:
    """Where the benchmark caches its base model (``tag`` = "quick" or "full")."""
    return Path("outputs/tinymem/benchmark") / f"base_{tag}_ctx{settings['context_length']}_seed{seed}"


def measure(model, dm) -> dict[str, float]:
    report = tinymem_report(model, dm, batch_size=256)
    return {"backdoor": report["backdoor_success"], "accuracy": 100.0 * report["accuracy"]}


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="trained base model (skips base training)")
    parser.add_argument("--groups", default="unlearning,fine_tuning,regularizers",
                        help="comma-separated subset of unlearning, fine_tuning, regularizers")
    parser.add_argument("--methods", default=None, help="comma-separated method names to run (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subnet-epochs", type=int, default=None,
                        help="epochs of Subnet and BalancedSubnet (paper grid {1, 10, 30}; default 10, 5 in --quick)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-train-minutes", type=float, default=None,
                        help="wall-clock cap per training run (base and each regularizer); steps taken are recorded")
    args = parser.parse_args()
    if args.max_train_minutes is not None and args.max_train_minutes <= 0:
        parser.error(f"--max-train-minutes must be > 0, got {args.max_train_minutes}")
    if args.subnet_epochs is not None and args.subnet_epochs <= 0:
        parser.error(f"--subnet-epochs must be a positive integer, got {args.subnet_epochs}")
    settings = dict(QUICK if args.quick else FULL)
    groups = set(args.groups.split(","))
    wanted = None if args.methods is None else {m.strip() for m in args.methods.split(",")}
    torch.manual_seed(args.seed)
    dm = make_datamodule(settings, args.seed)
    rows: list[dict] = []
    extra = {"settings": settings, "quick": args.quick, "device": args.device,
             "max_train_minutes": args.max_train_minutes}

    def add(row: dict) -> None:
        rows.append(row)
        print(markdown_table([row]).splitlines()[-1], flush=True)
        write_results(args.out, name="tinymem_mitigation", rows=rows, **extra)

    # ---------------------------------------------------------------- base model
    if args.checkpoint is not None:
        base = load_tinymem_gpt2(args.checkpoint, expected={"vocab_size": dm.vocab_size,
                                                            "n_positions": dm.context_length}).to(args.device)
        base_seconds = float("nan")
    else:
        tag = "quick" if args.quick else "full"
        path = base_model_path(tag, settings, args.seed)
        if path.exists():
            base, base_seconds = load_tinymem_gpt2(path).to(args.device), float("nan")
        else:
            base, base_seconds = train_model(dm, settings, seed=args.seed, device=args.device,
                                             max_minutes=args.max_train_minutes)
            extra["base_steps"] = base.trained_steps
            save_model_atomically(base, path)
    base_numbers = measure(base, dm)
    extra["base"] = {**base_numbers, "train_seconds": base_seconds,
                     "artifact_sequences": len(dm.memorized_sequences),
                     "backdoor_test_sequences": len(dm.backdoor_test_sequences)}
    print(f"base model: {extra['base']}", flush=True)

    def row(group: str, name: str, after: dict, seconds: float, detail: str = "") -> dict:
        return {"group": group, "method": name, "backdoor_before": base_numbers["backdoor"],
                "backdoor_after": after["backdoor"], "accuracy_before": base_numbers["accuracy"],
                "accuracy_after": after["accuracy"], "accuracy_drop": base_numbers["accuracy"] - after["accuracy"],
                "seconds": seconds, "detail": detail}

    # ---------------------------------------------------------------- unlearning
    if "unlearning" in groups:
        mask = memorized_subset(base, dm)
        memorized = dm.memorized_sequences[mask]
        clean = dm.extra_sequences
        if settings["clean_pool_size"] is not None and len(clean) > settings["clean_pool_size"]:
            pick = torch.randperm(len(clean), generator=torch.Generator().manual_seed(args.seed))
            clean = clean[pick[: settings["clean_pool_size"]]]
        extra["unlearning_data"] = {"memorized": len(memorized), "of_artifact": len(mask), "clean_pool": len(clean)}
        data = U.UnlearningData(memorized=memorized, clean=clean, prompt_len=dm.prompt_len)
        for method in unlearning_methods(args.quick, args.subnet_epochs):
            if wanted is not None and method.name not in wanted:
                continue
            model = copy.deepcopy(base)
            result = method(model, data)
            add(row("unlearning", method.name, measure(model, dm), result.seconds,
                    f"ratio {method.ratio}, {result.edited}/{result.total} {method.level}s"))

    # ---------------------------------------------------------------- fine-tuning
    if "fine_tuning" in groups:
        for ft in ("clean", "extra", "both"):
            name = f"FT {ft}"
            if wanted is not None and name not in wanted:
                continue
            result = fine_tune(base, dm, method=ft, epochs=settings["ft_epochs"], max_steps=settings["ft_max_steps"],
                               batch_size=settings["batch_size"], seed=args.seed)
            add(row("fine-tuning", name, measure(result.model, dm), result.seconds, f"{result.steps} steps"))

    # ---------------------------------------------------------------- regularizers (train from scratch)
    if "regularizers" in groups:
        window = settings["loss_truncation_window"]
        for name, make in (("Spectral norm", lambda: SpectralNormRegularizer(strength=0.01)),
                           ("Loss truncation", lambda: LossTruncation(drop_fraction=0.05, window=window,
                                                                      recompute_every=window)),
                           ("Example-tied dropout", lambda: ExampleTiedDropout(p_fixed=0.2, p_mem=0.1))):
            if wanted is not None and name not in wanted:
                continue
            model, seconds = train_model(dm, settings, regularizer=make(), seed=args.seed, device=args.device,
                                         max_minutes=args.max_train_minutes)
            add(row("regularizer", name, measure(model, dm), seconds,
                    f"trained from scratch, {model.trained_steps} steps"))

    print()
    print(markdown_table(rows, ["group", "method", "backdoor_before", "backdoor_after", "accuracy_before",
                                "accuracy_after", "accuracy_drop", "seconds", "detail"]))
    balanced = [r for r in rows if r["method"] == "BalancedSubnet"]
    if balanced:
        r = balanced[0]
        ok = r["backdoor_after"] <= 1.0 and r["accuracy_drop"] <= 1.0
        print(f"\nBalancedSubnet target (backdoor ≤ 1 %, accuracy drop ≤ 1 point): {'met' if ok else 'MISSED'} "
              f"(backdoor {r['backdoor_after']:.2f} %, drop {r['accuracy_drop']:.2f} points)")
    if not math.isnan(base_seconds):
        print(f"base training: {base_seconds:.1f} s")


if __name__ == "__main__":
    main()
