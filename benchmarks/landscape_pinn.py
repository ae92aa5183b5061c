"""Loss-landscape topology and Hessian probes on the 1-D convection PINN (β sweep) and on ResNets with/without skips.

    python benchmarks/landscape_pinn.py [--quick] [--out FILE.json] [--workers N] [--threads T]

PINN (Krishnapriyan et al. 2021 setting, research note §7): β ∈ {1, 5, 10, 20, 30, 40} × seeds, N_f = 100, 4×50 tanh,
one L-BFGS step (lr 1, strong Wolfe). Trained with Lightning; ``HessianProbe`` and ``LossLandscapeProbe`` attached
as callbacks (fit end). Reported per model: relative L2 error against the exact solution sin(x − βt), top-2 Hessian
eigenvalues, Hutchinson trace (± SE), number of minima / saddles and persistence on a 41×41 filter-normalised random
plane (α ∈ [−1, 1]², Freudenthal neighbours; axis and full-connectivity counts too), and (full run) on the plane of
the top-2 Hessian eigenvectors (α ∈ [−2, 2]²). Reference: rel. L2 < 0.1 for β ≤ 5 and > 0.5 for β ≥ 10; minima and
λ1 rise with β (Spearman ≥ 0.7).

ResNet study: a ResNet-(6n+2) on scikit-learn's 8×8 digits with and without residual connections: test accuracy, λ1,
trace and landscape topology on a fixed probe batch (the LossLens ResNet-20 / CIFAR-10 case, scaled to CPU).

``--quick``: one seed, fewer trace probes / SLQ steps, no Hessian plane, a smaller ResNet; meant for 2 CPU cores.
``--workers`` runs the (β, seed) models in parallel processes of ``--threads`` threads each. The full run has 5 seeds
per β (30 PINNs); ``--seeds`` picks others and ``--merge FILE.json`` adds the PINN rows of an earlier run (other
seeds, same settings) before the statistics. Every Spearman ρ comes with a 95 % percentile bootstrap interval over
the models (``benchmarks/evidence.py``); a target "ρ ≥ 0.7" is called met / missed only when the interval lies on
one side of 0.7, otherwise "undecided". Nothing in this study is tuned (the settings are the note's), so there is no
validation split.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.evidence import spearman_interval  # noqa: E402
from benchmarks.harness import LiveTable, benchmark_parser, markdown_table, stage, write_results  # noqa: E402

BETAS = (1.0, 5.0, 10.0, 20.0, 30.0, 40.0)


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"seeds": [0], "n_collocation": 100, "lbfgs_max_iter": 5000, "resolution": 41, "trace_samples": 30,
                "density_steps": 40, "hessian_plane": False,
                "resnet": {"seeds": [0], "width": 8, "blocks_per_stage": 1, "epochs": 8, "probe_images": 256,
                           "resolution": 21, "trace_samples": 10, "max_iter": 20}}
    return {"seeds": [0, 1, 2, 3, 4], "n_collocation": 100, "lbfgs_max_iter": 5000, "resolution": 41, "trace_samples": 100,
            "density_steps": 80, "hessian_plane": True,
            "resnet": {"seeds": [0, 1], "width": 16, "blocks_per_stage": 3, "epochs": 15, "probe_images": 512,
                       "resolution": 41, "trace_samples": 30, "max_iter": 30}}


def _quiet() -> None:
    import logging

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def pinn_run(job: tuple[float, int, dict[str, Any], int]) -> dict[str, Any]:
    """Train one PINN with both probes attached; returns its row."""
    beta, seed, cfg, threads = job
    _quiet()
    import lightning.pytorch as pl
    import torch

    from framework.callbacks.hessian_probe import HessianProbe
    from framework.callbacks.loss_landscape_probe import LossLandscapeProbe
    from framework.datamodules.convection_collocation import ConvectionCollocation
    from framework.models.pinn_convection import PINNConvection, functional_pinn_loss

    torch.set_num_threads(threads)
    start = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    model = PINNConvection(beta=beta, lbfgs_max_iter=cfg["lbfgs_max_iter"])
    data = ConvectionCollocation(n_collocation=cfg["n_collocation"])
    out = tempfile.mkdtemp(prefix="landscape-pinn-")
    hessian = HessianProbe(top_k=2, trace_samples=cfg["trace_samples"], density_steps=cfg["density_steps"],
                           log_figures=False, output_dir=out)
    random_plane = LossLandscapeProbe(resolution=cfg["resolution"], grid_range=1.0, loss_fn=functional_pinn_loss,
                                      log_figures=False, output_dir=out, seed=seed)
    callbacks = [hessian, random_plane]
    hessian_plane = None
    if cfg["hessian_plane"]:
        hessian_plane = LossLandscapeProbe(resolution=cfg["resolution"], grid_range=2.0, directions="hessian",
                                           loss_fn=functional_pinn_loss, log_figures=False, output_dir=out, seed=seed)
        callbacks.append(hessian_plane)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, callbacks=callbacks)
    trainer.fit(model, data)
    data.setup()
    optimizer = trainer.optimizers[0]
    state = optimizer.state[next(iter(optimizer.state))] if optimizer.state else {}
    h = hessian.reports[-1]
    train_loss = float(h.loss)  # the probed loss is the training loss at the final weights
    r = random_plane.reports[-1]
    row = {
        "study": "pinn", "beta": beta, "seed": seed,
        "rel_l2": model.relative_l2_error(data.grid_points),
        "train_loss": train_loss,
        "lbfgs_iterations": int(state.get("n_iter", -1)),
        "lambda_1": float(h.eigenpairs.values[0]), "lambda_2": float(h.eigenpairs.values[1]),
        "trace": h.trace.mean, "trace_se": h.trace.standard_error,
        "density_negative_mass": h.scalars().get("density_negative_mass", float("nan")),
        "hvp_method": h.hvp_method,
        "hvp_ms_double_backward": 1000 * h.hvp_timing.seconds.get("double_backward", float("nan"))
        if h.hvp_timing else float("nan"),
        "hvp_ms_func": 1000 * h.hvp_timing.seconds.get("func", float("nan")) if h.hvp_timing else float("nan"),
        "minima_freudenthal": r.summaries["freudenthal"].n_minima,
        "minima_axis": r.summaries["axis"].n_minima,
        "minima_full": r.summaries["full"].n_minima,
        "saddles_freudenthal": r.summaries["freudenthal"].n_saddles,
        "minima_above_5pct": r.summaries["freudenthal"].n_minima_above_5pct,
        "avg_persistence": r.summaries["freudenthal"].average_persistence,
        "avg_persistence_normalized": r.summaries["freudenthal"].average_persistence_normalized,
        "loss_range": r.summaries["freudenthal"].loss_range,
        "grid_batching": r.grid.batching,
        "grid_ms_per_point": {k: 1000 * v for k, v in r.grid.seconds_per_point.items()},
    }
    if hessian_plane is not None:
        hp = hessian_plane.reports[-1]
        row["minima_hessian_plane"] = hp.summaries["freudenthal"].n_minima
        row["avg_persistence_hessian_plane_normalized"] = hp.summaries["freudenthal"].average_persistence_normalized
    row["seconds"] = time.perf_counter() - start
    return row


def _digits(seed: int):
    """scikit-learn digits, standardised with training statistics, stratified 60/20/20 split (seeded)."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.2, stratify=labels,
                                                        random_state=seed)
    mean, std = x_train.mean(), x_train.std()
    norm = lambda a: torch.from_numpy((a - mean) / std)  # noqa: E731
    return norm(x_train), torch.from_numpy(y_train), norm(x_test), torch.from_numpy(y_test)


def resnet_run(job: tuple[bool, int, dict[str, Any], int]) -> dict[str, Any]:
    """Train one ResNet on digits and probe it; returns its row."""
    residual, seed, cfg, threads = job
    _quiet()
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from framework.callbacks.hessian_probe import HessianProbe
    from framework.callbacks.loss_landscape_probe import LossLandscapeProbe
    from framework.models.resnet_classifier import ResNetClassifier

    torch.set_num_threads(threads)
    start = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    x_train, y_train, x_test, y_test = _digits(seed)
    train = DataLoader(TensorDataset(x_train, y_train), batch_size=128, shuffle=True)
    epochs = cfg["epochs"]
    model = ResNetClassifier(
        width=cfg["width"], blocks_per_stage=cfg["blocks_per_stage"], residual=residual,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
        scheduler=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs),
    )
    probe = [(x_train[: cfg["probe_images"]], y_train[: cfg["probe_images"]])]
    out = tempfile.mkdtemp(prefix="landscape-resnet-")
    hessian = HessianProbe(top_k=1, max_iter=cfg["max_iter"], trace_samples=cfg["trace_samples"], density_steps=0,
                           probe_data=probe, log_figures=False, output_dir=out)
    plane = LossLandscapeProbe(resolution=cfg["resolution"], grid_range=1.0, probe_data=probe, log_figures=False,
                               output_dir=out, seed=seed)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[hessian, plane])
    trainer.fit(model, train_dataloaders=train)
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(-1) == y_test).float().mean())
    h, r = hessian.reports[-1], plane.reports[-1]
    s = r.summaries["freudenthal"]
    return {
        "study": "resnet", "residual": residual, "seed": seed,
        "depth": model.net.depth, "width": cfg["width"], "parameters": h.num_parameters,
        "test_accuracy": accuracy, "probe_loss": h.loss,
        "lambda_1": float(h.eigenpairs.values[0]), "trace": h.trace.mean, "trace_se": h.trace.standard_error,
        "hvp_method": h.hvp_method,
        "minima_freudenthal": s.n_minima, "minima_axis": r.summaries["axis"].n_minima,
        "minima_full": r.summaries["full"].n_minima, "saddles_freudenthal": s.n_saddles,
        "minima_above_5pct": s.n_minima_above_5pct,
        "avg_persistence": s.average_persistence, "avg_persistence_normalized": s.average_persistence_normalized,
        "loss_range": s.loss_range, "grid_batching": r.grid.batching,
        "seconds": time.perf_counter() - start,
    }


def hvp_comparison(threads: int) -> list[dict[str, Any]]:
    """Seconds per Hessian-vector product, double backward vs torch.func jvp∘grad, on the same vector."""
    _quiet()
    import torch

    from framework.callbacks.landscape.hessian_vector_product import choose_hvp_method
    from framework.callbacks.landscape.probe_loss import ProbeLoss, isolated_module
    from framework.datamodules.convection_collocation import ConvectionCollocation
    from framework.models.pinn_convection import PINNConvection, functional_pinn_loss
    from framework.models.resnet_classifier import ResNetClassifier

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    data = ConvectionCollocation()
    data.setup()
    x, y, _, _ = _digits(0)
    cases = [
        ("PINN 4x50 tanh, func-form loss", PINNConvection(beta=10.0), [data.train_batch], functional_pinn_loss),
        ("PINN 4x50 tanh, training_step (autograd.grad residual)", PINNConvection(beta=10.0), [data.train_batch],
         None),
        ("ResNet-8 w8 digits, 128 images", ResNetClassifier(width=8, blocks_per_stage=1), [(x[:128], y[:128])], None),
        ("ResNet-20 w16 digits, 128 images", ResNetClassifier(width=16, blocks_per_stage=3), [(x[:128], y[:128])],
         None),
    ]
    rows = []
    for name, model, batches, loss_fn in cases:
        with isolated_module(model):
            timing = choose_hvp_method(ProbeLoss(model, batches, loss_fn=loss_fn), repeats=3)
        rows.append({"model": name, "ms_double_backward": 1000 * timing.seconds["double_backward"],
                     "ms_func": 1000 * timing.seconds.get("func", float("nan")),
                     "func_over_double_backward": timing.seconds.get("func", float("nan"))
                     / timing.seconds["double_backward"],
                     "rel_difference": timing.relative_difference, "chosen": timing.method,
                     "func_error": timing.func_error[:80]})
    return rows


PINN_COLUMNS = ["beta", "seed", "rel_l2", "train_loss", "lbfgs_iterations", "lambda_1", "trace", "trace_se",
                "minima_freudenthal", "minima_axis", "minima_full", "saddles_freudenthal", "avg_persistence",
                "avg_persistence_normalized", "loss_range", "seconds"]
RESNET_COLUMNS = ["residual", "seed", "depth", "width", "parameters", "test_accuracy", "probe_loss", "lambda_1", "trace",
                  "minima_freudenthal", "minima_axis", "minima_full", "saddles_freudenthal", "avg_persistence",
                  "avg_persistence_normalized", "loss_range", "seconds"]


def _map(fn, jobs, workers: int, tables: dict[str, LiveTable]):
    """Run ``fn`` over ``jobs``; every finished row is printed at once as a markdown line of its study's table (a run
    cut short still leaves its rows)."""
    def show(row):
        tables[row.get("study", "pinn")].add(row)
        return row

    if workers <= 1:
        rows = []
        for i, job in enumerate(jobs, start=1):
            with stage(f"model {i}/{len(jobs)}"):
                rows.append(show(fn(job)))
        return rows
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(fn, job) for job in jobs]
        with stage(f"{len(jobs)} models on {workers} workers"):
            for future in as_completed(futures):
                show(future.result())
        return [f.result() for f in futures]


def _summary_tables(summary: dict[str, Any]) -> str:
    """The Spearman correlations and the targets of :func:`evaluate` as markdown tables."""
    keys = list(summary["spearman_vs_beta"])
    intervals = summary.get("spearman_vs_beta_ci95", {})
    correlations = [{"quantity": k, "spearman_vs_beta": summary["spearman_vs_beta"][k],
                     "ci95_vs_beta": "[%.3f, %.3f]" % tuple(intervals[k]) if k in intervals else "",
                     "spearman_vs_rel_l2": summary["spearman_vs_rel_l2"].get(k, float("nan"))} for k in keys]
    targets = [{"target": k, "met": v} for k, v in summary["targets"].items()]
    return markdown_table(correlations) + "\n\n" + markdown_table(targets)


def _median(values):
    values = sorted(v for v in values if v == v)
    n = len(values)
    return float("nan") if n == 0 else (values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2]))


def evaluate(pinn_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Spearman correlations and the reference checks."""
    from scipy.stats import spearmanr

    beta = [r["beta"] for r in pinn_rows]
    error = [r["rel_l2"] for r in pinn_rows]
    out: dict[str, Any] = {"spearman_vs_beta": {}, "spearman_vs_rel_l2": {}, "spearman_vs_beta_ci95": {},
                           "models": len(pinn_rows), "seeds": sorted({r["seed"] for r in pinn_rows})}
    keys = ["minima_freudenthal", "minima_axis", "minima_full", "lambda_1", "trace", "avg_persistence",
            "avg_persistence_normalized", "loss_range", "minima_hessian_plane"]
    for key in keys:
        if key in pinn_rows[0]:
            values = [r[key] for r in pinn_rows]
            out["spearman_vs_beta"][key] = float(spearmanr(beta, values).statistic)
            out["spearman_vs_rel_l2"][key] = float(spearmanr(error, values).statistic)
            if key in ("minima_freudenthal", "lambda_1", "trace"):
                interval = spearman_interval(beta, values, n_resamples=5000)
                out["spearman_vs_beta_ci95"][key] = [interval.low, interval.high]
    low = [r["rel_l2"] for r in pinn_rows if r["beta"] <= 5]
    high = [r["rel_l2"] for r in pinn_rows if r["beta"] >= 10]
    out["max_rel_l2_beta_le_5"] = max(low)
    out["min_rel_l2_beta_ge_10"] = min(high)
    def against(key: str, threshold: float = 0.7) -> str:
        low_ci, high_ci = out["spearman_vs_beta_ci95"][key]
        point = out["spearman_vs_beta"][key]
        side = "met" if point >= threshold else "missed"
        if low_ci >= threshold or high_ci < threshold:
            return f"{side} (interval [{low_ci:.3f}, {high_ci:.3f}] on one side of {threshold})"
        return f"undecided: point {side} but the interval [{low_ci:.3f}, {high_ci:.3f}] contains {threshold}"

    out["targets"] = {
        "rel_l2 < 0.1 for beta <= 5": max(low) < 0.1,
        "rel_l2 > 0.5 for beta >= 10": min(high) > 0.5,
        "spearman(minima, beta) >= 0.7": against("minima_freudenthal"),
        "spearman(lambda_1, beta) >= 0.7": against("lambda_1"),
    }
    out["per_beta_median"] = {
        str(b): {k: _median([r[k] for r in pinn_rows if r["beta"] == b])
                 for k in ("rel_l2", "minima_freudenthal", "lambda_1", "trace", "avg_persistence_normalized")}
        for b in sorted(set(beta))
    }
    return out


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1: serial)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per process")
    parser.add_argument("--skip-resnet", action="store_true", help="only the PINN sweep")
    parser.add_argument("--skip-hvp", action="store_true", help="no HVP timing comparison")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="PINN seeds (default 0-4; --quick 0)")
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="earlier JSON(s) of this script whose PINN rows (other seeds) join the statistics")
    args = parser.parse_args()
    merged: list[dict[str, Any]] = []
    for path in args.merge:
        import json

        try:
            payload = json.loads(path.read_text())
            merged += [r for r in payload["rows"] if r.get("study") == "pinn"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            parser.error(f"--merge {path}: not a readable landscape_pinn JSON with rows ({err})")
    _quiet()
    cfg = settings(args.quick)
    if args.seeds is not None:
        if any(s < 0 for s in args.seeds):
            parser.error(f"--seeds must be non-negative integers, got {args.seeds}")
        cfg["seeds"] = sorted(set(args.seeds))
    clash = {(r["beta"], r["seed"]) for r in merged} & {(b, s) for b in BETAS for s in cfg["seeds"]}
    if clash:
        parser.error(f"--merge rows repeat (beta, seed) pairs of this run: {sorted(clash)[:5]}")
    start = time.perf_counter()
    pinn_jobs = [(beta, seed, cfg, args.threads) for beta in BETAS for seed in cfg["seeds"]]
    resnet_jobs = [] if args.skip_resnet else [
        (residual, seed, cfg["resnet"], args.threads) for residual in (True, False) for seed in cfg["resnet"]["seeds"]
    ]
    columns = list(PINN_COLUMNS)
    if cfg["hessian_plane"]:
        columns.insert(11, "minima_hessian_plane")
    pinn_title = "## PINN convection (N_f = %d, %d×%d random plane)" % (cfg["n_collocation"], cfg["resolution"],
                                                                       cfg["resolution"])
    tables = {"pinn": LiveTable(title=pinn_title + ", rows as they finish", columns=columns),
              "resnet": LiveTable(title="## ResNet on digits, with / without residual connections, rows as they finish",
                                  columns=RESNET_COLUMNS)}
    # ResNet jobs first: they are the longest, so a parallel pool finishes sooner.
    resnet_rows = _map(resnet_run, resnet_jobs, args.workers, tables) if args.workers <= 1 else []
    pinn_rows = _map(pinn_run, pinn_jobs, args.workers, tables) if args.workers <= 1 else []
    if args.workers > 1:
        both = _map(_dispatch, [("resnet", j) for j in resnet_jobs] + [("pinn", j) for j in pinn_jobs], args.workers,
                    tables)
        resnet_rows = [r for r in both if r["study"] == "resnet"]
        pinn_rows = [r for r in both if r["study"] == "pinn"]
    summary = evaluate(pinn_rows + merged)
    summary["merged_from"] = [str(p) for p in args.merge]
    if args.skip_hvp:
        hvp_rows = []
    else:
        with stage("Hessian-vector product comparison"):
            hvp_rows = hvp_comparison(args.threads)
    total = time.perf_counter() - start
    print("\n" + pinn_title + ", all rows\n")
    print(markdown_table(pinn_rows + merged, columns))
    print("\n## Spearman correlations and targets\n")
    print(_summary_tables(summary))
    if resnet_rows:
        print("\n## ResNet on digits, with / without residual connections, all rows\n")
        print(markdown_table(resnet_rows, RESNET_COLUMNS))
    if hvp_rows:
        print("\n## Hessian-vector product: double backward vs torch.func (jvp∘grad)\n")
        print(markdown_table(hvp_rows))
    print(f"\ntotal wall time: {total:.1f} s (workers={args.workers}, threads={args.threads})")
    write_results(args.out, name="landscape_pinn", rows=pinn_rows + resnet_rows, summary=summary, settings=cfg, hvp_comparison=hvp_rows,
                  quick=args.quick, workers=args.workers, threads=args.threads, total_seconds=total)


def _dispatch(item):
    kind, job = item
    return resnet_run(job) if kind == "resnet" else pinn_run(job)


if __name__ == "__main__":
    main()
