"""Reproduction of "How many classifiers do we need?" (Kim et al., NeurIPS 2024) at small scale, on digits.

For a grid of small CNNs / MLPs (widths, depths, learning rates), train an ensemble of ``--members`` (20) members
with different seeds *to interpolation* (every member at train error 0), jointly with vmap. On the in-distribution
test split and two shifted copies of it (Gaussian noise, rotation) report:

- polarization η of the full ensemble (and of its first 5 members), and how many ensembles have η <= 4/3;
- the majority-vote error next to the polarization bound with the law's η = 4/3, the C-bound and the competence
  bound (the latter valid only for competent ensembles: the flag is reported);
- the majority-vote error predicted for M = 5, 10, 20 members from the first 3 members (law η = 4/3 and the
  3-member η), against the actual error (M = 20: the full ensemble; M < 20: the mean over random size-M
  sub-ensembles, which is what the predictor estimates). Target: mean absolute error <= 1 point.

    python benchmarks/polarization.py --quick --out benchmarks/results/polarization.json

Prints markdown tables and writes JSON with every number and the environment.
"""

from __future__ import annotations

import math
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import benchmark_parser, environment, write_results  # noqa: E402
from framework.atomic_files import write_json_atomic  # noqa: E402
from framework.datamodules.digits_classification import generate_image_classification, shift_images  # noqa: E402
from framework.metrics.ensemble_bounds import POLARIZATION_LAW_ETA  # noqa: E402
from framework.metrics.ensemble_polarization import ensemble_polarization_statistics  # noqa: E402
from framework.models.components.ensemble import SmallCNN, SmallMLP, StackedMembers, seeded_member_copies  # noqa: E402

PREDICT_SIZES = (5, 10, 20)
SUBSETS_PER_SIZE = 30
TRIPLES = 20


@dataclass(frozen=True)
class Setting:
    arch: str
    width: int
    depth: int
    lr: float

    @property
    def name(self) -> str:
        return f"{self.arch}-w{self.width}-d{self.depth}-lr{self.lr:g}"


def grid(quick: bool) -> list[Setting]:
    if quick:
        return [
            Setting("mlp", 128, 1, 3e-3), Setting("mlp", 512, 1, 1e-3), Setting("mlp", 256, 2, 3e-3),
            Setting("mlp", 128, 3, 1e-3), Setting("cnn", 8, 2, 3e-3), Setting("cnn", 8, 3, 1e-3),
        ]
    mlps = [Setting("mlp", w, d, lr) for w in (64, 256, 512) for d in (1, 2, 3) for lr in (1e-3, 3e-3)]
    cnns = [Setting("cnn", w, d, lr) for w in (8, 16) for d in (2, 3) for lr in (1e-3, 3e-3)]
    return mlps + cnns


def load_data(seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    raw = generate_image_classification(source="digits", folder_signature="", image_size=8, in_channels=1,
                                        val_fraction=0.0, test_fraction=0.4, shift="none", shift_severity=0.0,
                                        seed=seed)
    images, labels, split = raw["image"], raw["label"], raw["split"]
    test = images[split == 2]
    sets = {
        "train": (images[split == 0], labels[split == 0]),
        "test": (test, labels[split == 2]),
        "test_noise": (shift_images(test, "gaussian_noise", 0.3, seed), labels[split == 2]),
        "test_rotation": (shift_images(test, "rotation", 20.0, seed), labels[split == 2]),
    }
    mean, std = sets["train"][0].mean(), sets["train"][0].std()
    return {k: (torch.from_numpy((x - mean) / std).float(), torch.from_numpy(y).long()) for k, (x, y) in sets.items()}


def build_member(setting: Setting) -> torch.nn.Module:
    if setting.arch == "mlp":
        return SmallMLP(in_features=64, num_classes=10, width=setting.width, depth=setting.depth)
    return SmallCNN(in_channels=1, num_classes=10, width=setting.width, depth=setting.depth)


def train_to_interpolation(setting: Setting, members: int, data, *, max_epochs: int, batch_size: int, seed: int):
    """Joint (vmap) training with Adam until every member has zero training error or ``max_epochs``."""
    stack = StackedMembers(seeded_member_copies(build_member(setting), [seed * 1000 + i for i in range(members)]))
    optimizer = torch.optim.Adam(stack.parameters(), lr=setting.lr)
    x, y = data["train"]
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    epochs, train_errors = 0, [1.0] * members
    for epoch in range(max_epochs):
        stack.train()
        for idx in torch.randperm(len(y), generator=generator).split(batch_size):
            logits = stack(x[idx])
            loss = F.cross_entropy(logits.reshape(-1, 10), y[idx].repeat(members), reduction="none")
            optimizer.zero_grad(set_to_none=True)
            loss.view(members, -1).mean(dim=1).sum().backward()
            optimizer.step()
        epochs = epoch + 1
        stack.eval()
        with torch.no_grad():
            train_errors = (stack(x).argmax(-1) != y).float().mean(dim=1).tolist()
        if max(train_errors) == 0.0:
            break
    return stack, epochs, train_errors, time.perf_counter() - start


def split_report(logits: torch.Tensor, y: torch.Tensor, rng: random.Random) -> dict:
    m = logits.shape[0]
    full = ensemble_polarization_statistics(logits, y)
    first5 = ensemble_polarization_statistics(logits[:5], y)
    first3 = ensemble_polarization_statistics(logits[:3], y)
    triples = [rng.sample(range(m), 3) for _ in range(TRIPLES)]
    triple_stats = [ensemble_polarization_statistics(logits[t], y) for t in triples]
    prediction = {}
    for size in PREDICT_SIZES:
        if size > m:
            continue
        if size == m:
            actual = full.majority_vote_error
        else:
            subsets = [rng.sample(range(m), size) for _ in range(SUBSETS_PER_SIZE)]
            actual = float(np.mean([ensemble_polarization_statistics(logits[s], y).majority_vote_error
                                    for s in subsets]))
        prediction[str(size)] = {
            "actual": actual,
            "law_first3": first3.predict_majority_vote_error(size, "law"),
            "measured_first3": first3.predict_majority_vote_error(size, "measured"),
            "law_mean_over_triples": float(np.mean([s.predict_majority_vote_error(size, "law") for s in triple_stats])),
        }
    return {
        "eta": full.polarization,
        "eta_first5": first5.polarization,
        "eta_first3": first3.polarization,
        "majority_vote_error": full.majority_vote_error,
        "majority_vote_ties": full.majority_vote_ties,
        "mean_member_error": full.mean_member_error,
        "disagreement": full.disagreement,
        "disagreement_pairs": full.disagreement_pairs,
        "both_wrong_disagreement": full.both_wrong_disagreement,
        "w_second_moment": full.w_second_moment,
        "identity_residual": full.identity_residual,
        "bound_law": full.bound(POLARIZATION_LAW_ETA),
        "c_bound": full.c_bound,
        "competence_bound": full.competence_bound,
        "competent": full.competent,
        "prediction": prediction,
    }


def summarize(records: list[dict], splits: list[str]) -> dict:
    out = {}
    interp = [r for r in records if r["interpolating"]]
    for split in splits:
        rows = [r["splits"][split] for r in interp]
        etas = [r["eta"] for r in rows if not math.isnan(r["eta"])]
        entry = {
            "ensembles": len(rows),
            "eta_defined": len(etas),
            "eta_at_most_law": sum(e <= POLARIZATION_LAW_ETA for e in etas),
            "eta_median": float(np.median(etas)) if etas else math.nan,
            "eta_max": max(etas) if etas else math.nan,
            "bound_law_holds": sum(r["bound_law"] >= r["majority_vote_error"] for r in rows),
            "c_bound_holds": sum(r["c_bound"] >= r["majority_vote_error"] for r in rows),
            "competence_bound_holds": sum(r["competence_bound"] >= r["majority_vote_error"] for r in rows),
            "competent": sum(bool(r["competent"]) for r in rows),
            "mean_gap_points": {
                name: 100 * float(np.mean([r[name] - r["majority_vote_error"] for r in rows])) if rows else math.nan
                for name in ("bound_law", "c_bound", "competence_bound")
            },
            "prediction_mae_points": {},
        }
        for size in PREDICT_SIZES:
            for method in ("law_first3", "measured_first3", "law_mean_over_triples"):
                errs = [abs(r["prediction"][str(size)][method] - r["prediction"][str(size)]["actual"]) for r in rows
                        if str(size) in r["prediction"] and not math.isnan(r["prediction"][str(size)][method])]
                entry["prediction_mae_points"][f"M{size}_{method}"] = 100 * float(np.mean(errs)) if errs else math.nan
        out[split] = entry
    return out


def markdown(result: dict) -> str:
    lines = []
    splits = result["splits"]
    lines.append("| ensemble | epochs | train err | " + " | ".join(f"η {s}" for s in splits) + " |")
    lines.append("|---|---|---|" + "---|" * len(splits))
    for r in result["ensembles"]:
        etas = " | ".join(f"{r['splits'][s]['eta']:.3f}" for s in splits)
        lines.append(f"| {r['name']} | {r['epochs']} | {max(r['train_errors']):.4f} | {etas} |")
    lines.append("")
    lines.append("| ensemble | split | L_MV | 4/3·E[W²] | C-bound | competence (competent?) | L̄ | D |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in result["ensembles"]:
        for s in splits:
            x = r["splits"][s]
            lines.append(f"| {r['name']} | {s} | {x['majority_vote_error']:.4f} | {x['bound_law']:.4f} | "
                         f"{x['c_bound']:.4f} | {x['competence_bound']:.4f} ({'yes' if x['competent'] else 'no'}) | "
                         f"{x['mean_member_error']:.4f} | {x['disagreement']:.4f} |")
    lines.append("")
    lines.append("| ensemble | split | M | actual L_MV | law, first 3 | measured η₃, first 3 | law, mean of 20 triples |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in result["ensembles"]:
        for s in splits:
            for size, p in r["splits"][s]["prediction"].items():
                lines.append(f"| {r['name']} | {s} | {size} | {p['actual']:.4f} | {p['law_first3']:.4f} | "
                             f"{p['measured_first3']:.4f} | {p['law_mean_over_triples']:.4f} |")
    lines.append("")
    lines.append("| split | interpolating ensembles | η ≤ 4/3 | median η | max η | law bound ≥ L_MV | C-bound ≥ L_MV | "
                 "competence ≥ L_MV (competent) | MAE pts law/first3 M=5,10,20 | MAE pts η₃/first3 | "
                 "MAE pts law/20 triples |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for s, e in result["summary"].items():
        mae = e["prediction_mae_points"]
        fmt = lambda method: ", ".join(f"{mae[f'M{m}_{method}']:.2f}" for m in PREDICT_SIZES)  # noqa: E731
        lines.append(f"| {s} | {e['ensembles']} | {e['eta_at_most_law']}/{e['eta_defined']} | {e['eta_median']:.3f} | "
                     f"{e['eta_max']:.3f} | {e['bound_law_holds']} | {e['c_bound_holds']} | "
                     f"{e['competence_bound_holds']} ({e['competent']}) | {fmt('law_first3')} | "
                     f"{fmt('measured_first3')} | {fmt('law_mean_over_triples')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 avoids OpenMP spin-waiting on a shared 2-core machine)")
    args = parser.parse_args(argv)
    if args.members < max(PREDICT_SIZES):
        parser.error(f"--members must be >= {max(PREDICT_SIZES)}, got {args.members}")
    torch.set_num_threads(args.threads)
    max_epochs = args.max_epochs or (80 if args.quick else 200)
    data = load_data(args.seed)
    splits = ["test", "test_noise", "test_rotation"]
    records = []
    started = time.perf_counter()
    cpu_started = time.process_time()
    for index, setting in enumerate(grid(args.quick)):
        torch.manual_seed(args.seed + index)
        stack, epochs, train_errors, seconds = train_to_interpolation(
            setting, args.members, data, max_epochs=max_epochs, batch_size=args.batch_size, seed=args.seed + index)
        rng = random.Random(args.seed * 7919 + index)
        stack.eval()
        record = {"name": setting.name, "arch": setting.arch, "width": setting.width, "depth": setting.depth,
                  "lr": setting.lr, "epochs": epochs, "train_errors": train_errors,
                  "interpolating": max(train_errors) == 0.0, "train_seconds": seconds, "splits": {}}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for split in splits:
                x, y = data[split]
                record["splits"][split] = split_report(stack(x), y, rng)
        records.append(record)
        if args.out is not None:  # partial results survive an interrupted long run
            partial = args.out.with_suffix(".partial.json")
            write_json_atomic(partial, {"ensembles": records}, default=float, keep_nonfinite=True)
        print(f"[{time.perf_counter() - started:6.1f}s] {setting.name}: {epochs} epochs, "
              f"max train err {max(train_errors):.4f}, η test {record['splits']['test']['eta']:.3f}, "
              f"L_MV test {record['splits']['test']['majority_vote_error']:.4f}", flush=True)
    result = {
        "command": "python benchmarks/polarization.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "quick": args.quick,
        "members": args.members,
        "max_epochs": max_epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "law_eta": POLARIZATION_LAW_ETA,
        "splits": splits,
        "test_points": int(len(data["test"][1])),
        "train_points": int(len(data["train"][1])),
        "tie_rule": "lowest_class",
        "wall_seconds": time.perf_counter() - started,
        # CPU seconds of this process: on a shared machine, wall time mostly measures the other tenants.
        "cpu_seconds": time.process_time() - cpu_started,
        "ensembles": records,
        "summary": summarize(records, splits),
    }
    print(markdown(result))
    rows = [{"split": split, **{k: v for k, v in entry.items() if not isinstance(v, dict)}}
            for split, entry in result["summary"].items()]
    write_results(args.out, name="polarization", rows=rows, **result)
    if args.out is not None:
        args.out.with_suffix(".partial.json").unlink(missing_ok=True)
    return {"environment": environment(), **result}


if __name__ == "__main__":
    main()
