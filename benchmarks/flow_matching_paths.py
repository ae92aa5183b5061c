"""Probability paths for flow-matching forecasting, compared side by side (Lim et al., TMLR 2025).

    python benchmarks/flow_matching_paths.py --quick [--out benchmarks/results/flow_matching_paths_quick.json]
    python benchmarks/flow_matching_paths.py --full  [--device cuda] [--out ...]      # the H200 comparison

Every path gets the same network (``VectorFieldNetwork``), the same data, the same optimiser and the same number of
training steps, from the same initial weights. Per system and path the script records:

- the training loss every ``log_every`` steps and the validation rollout RFNE (``val_intervals`` solver intervals,
  one member) at ``val_every``-step checkpoints;
- test rollouts (``horizon`` frames from ``context_length`` frames, ``ensemble`` members, σ_sam = 0) at 1, 2, 5, 10,
  20 and 50 solver *intervals* (Euler in ``--quick``, RK4 in ``--full``): RFNE, CRPS (fair ensemble estimator) and spread–skill ratio, averaged over lead
  times, all from ``framework.metrics.forecast_skill.ForecastSkill`` on standardised frames.

Claims tested (the paper's): (1) the paper's path ("bridge") converges fastest — lowest mean validation RFNE over
the checkpoints; (2) it has the lowest test rollout RFNE (at its best interval count and at 10 intervals); (3) its
5- and 10-interval RFNE are within 5% of its 50-interval RFNE.

AR(1) sanity system (``framework.datamodules.pde.linear_ar1``, not standardised): ``x_{k+1} = 0.9 x_k + 0.1 ξ`` in 16
dimensions. The optimal lead-ℓ forecast is the conditional mean with MSE ``q² Σ_{j<ℓ} a^{2j}`` (0.01 at lead 1);
a calibrated ensemble has spread–skill 1.

``--quick``: pixel space (no autoencoder), 32² Navier–Stokes (vorticity) and 32² diffusion–reaction, a 2+1-block
U-ViT of width 48 on 4×4 patches, few hundred steps; one torch thread per process. ``--full``: latent space with a
frame autoencoder trained first (4 latent channels, 4× downsampling) on 64² systems, a wider network and many more
steps (meant for a GPU; not run here).
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import benchmark_parser, markdown_table, write_results  # noqa: E402
from framework.datamodules.pde.linear_ar1 import ar1_optimal_forecast  # noqa: E402
from framework.datamodules.pde_trajectories import PDETrajectories  # noqa: E402
from framework.metrics.forecast_skill import ForecastSkill  # noqa: E402
from framework.models.components.flow_matching import PATHS  # noqa: E402
from framework.models.flow_matching_forecaster import FlowMatchingForecaster  # noqa: E402
from framework.models.frame_autoencoder import FrameAutoencoder  # noqa: E402

INTERVALS = (1, 2, 5, 10, 20, 50)


def settings(quick: bool) -> dict:
    if quick:
        return {
            "systems": {
                "navier_stokes": {"system_options": {"resolution": 32, "dt": 0.01, "frame_interval": 0.5,
                                                     "burn_in": 2.0},
                                  "num_trajectories": 28, "num_frames": 24},
                "diffusion_reaction": {"system_options": {"resolution": 32, "t_final": 5.0},
                                       "num_trajectories": 28, "num_frames": 26},
            },
            "ar1": {"num_trajectories": 40, "num_frames": 24},
            "mode": "pixel", "patch": 4, "d_model": 48, "heads": 4, "in_blocks": 1, "mid_blocks": 1,
            "steps": 300, "ar1_steps": 200, "batch": 16, "lr": 1e-3, "window": 6, "context": 2, "horizon": 5,
            "val_every": 100, "log_every": 25, "val_intervals": 10, "ensemble": 4, "val_trajectories": 3,
            "test_trajectories": 6, "eval_starts": [8], "solver": "euler",
        }
    return {
        "systems": {
            "navier_stokes": {"system_options": {"resolution": 64, "dt": 5e-3, "frame_interval": 0.5, "burn_in": 5.0},
                              "num_trajectories": 200, "num_frames": 60},
            "diffusion_reaction": {"system_options": {"resolution": 64, "t_final": 5.0},
                                   "num_trajectories": 200, "num_frames": 101},
        },
        "ar1": {"num_trajectories": 400, "num_frames": 60},
        "mode": "latent", "patch": 1, "d_model": 256, "heads": 8, "in_blocks": 2, "mid_blocks": 3,
        "steps": 20000, "ar1_steps": 3000, "batch": 32, "lr": 5e-4, "window": 12, "context": 5, "horizon": 20,
        "val_every": 1000, "log_every": 100, "val_intervals": 10, "ensemble": 8, "val_trajectories": 10,
        "test_trajectories": 20, "eval_starts": [10, 30], "ae_steps": 5000, "solver": "rk4",
    }


def make_data(system: str, spec: dict, cfg: dict, seed: int) -> PDETrajectories:
    data = PDETrajectories(system=system, system_options=spec.get("system_options", {}),
                           num_trajectories=spec["num_trajectories"], num_frames=spec["num_frames"],
                           val_trajectories=cfg["val_trajectories"], test_trajectories=cfg["test_trajectories"],
                           window_length=cfg["window"], context_length=cfg["context"], horizon=cfg["horizon"],
                           eval_starts=cfg["eval_starts"], normalize=system != "linear_ar1", batch_size=cfg["batch"],
                           seed=seed)
    data.setup()
    return data


def train_autoencoder(data: PDETrajectories, cfg: dict, device: str) -> FrameAutoencoder:
    channels = data.frame_shape[0]
    ae = FrameAutoencoder(in_channels=channels, latent_channels=4, base_channels=64, channel_mults=[1, 2, 2]).to(device)
    opt = torch.optim.AdamW(ae.parameters(), lr=1e-3)
    loader = data.train_dataloader()
    step = 0
    while step < cfg["ae_steps"]:
        for batch in loader:
            frames = batch.to(device).flatten(0, 1)
            loss = torch.nn.functional.mse_loss(ae(frames), frames)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= cfg["ae_steps"]:
                break
    ae.eval()
    n_train = 1 + max(i for i, _ in data.datasets["train"].starts)  # training trajectories come first
    frames = data.datasets["train"].frames[:n_train].flatten(0, 1)
    with torch.no_grad():
        ae.fit_latent_statistics(frames[torch.randperm(len(frames))[:2048]].to(device))
    return ae


def evaluate(model: FlowMatchingForecaster, loader, *, intervals: int, ensemble: int, seed: int, device: str,
             solver: str) -> dict:
    skill = ForecastSkill(horizon=model.horizon, fair=True, image_metrics=False).to(device)
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    for batch in loader:
        batch = batch.to(device)
        context, target = batch[:, :model.context_length], batch[:, model.context_length:]
        preds = model.rollout(context, ensemble_size=ensemble, intervals=intervals, solver=solver,
                              generator=generator)
        skill.update(preds, target)
    model.train()
    return {k: v.cpu() for k, v in skill.compute().items()}


def run_path(path: str, data: PDETrajectories, cfg: dict, init_state: dict | None, *, steps: int, seed: int,
             device: str, autoencoder: FrameAutoencoder | None) -> tuple[dict, dict]:
    torch.manual_seed(seed)
    c, h, w = data.frame_shape
    patch = cfg["patch"] if min(h, w) >= cfg["patch"] and h % cfg["patch"] == 0 else 1
    model = FlowMatchingForecaster(
        input_shape=[c, h, w], context_length=cfg["context"], horizon=cfg["horizon"], mode=cfg["mode"],
        autoencoder=autoencoder, path=path, patch_size=patch if cfg["mode"] == "pixel" else 1, d_model=cfg["d_model"],
        num_heads=cfg["heads"], in_blocks=cfg["in_blocks"], mid_blocks=cfg["mid_blocks"], solver=cfg["solver"],
        max_condition_distance=cfg["window"] - 2,
    ).to(device)
    if init_state is not None:  # identical initial weights for every path
        model.vector_field.load_state_dict(init_state)
    init = copy.deepcopy(model.vector_field.state_dict())
    opt = torch.optim.AdamW(model.vector_field.parameters(), lr=cfg["lr"])
    loader = data.train_dataloader()
    losses, curve, window_losses = [], [], []
    step, start = 0, time.perf_counter()
    while step < steps:
        for batch in loader:
            loss, _ = model.flow_matching_loss(batch.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            window_losses.append(float(loss.detach()))
            if step % cfg["log_every"] == 0:
                losses.append({"step": step, "loss": sum(window_losses) / len(window_losses)})
                window_losses = []
            if step % cfg["val_every"] == 0 or step == steps:
                val = evaluate(model, data.val_dataloader(), intervals=cfg["val_intervals"], ensemble=1, seed=seed,
                               device=device, solver=cfg["solver"])
                curve.append({"step": step, "val_rfne": float(val["rfne"].mean()), "val_mse": float(val["mse"].mean())})
            if step >= steps:
                break
    train_time = time.perf_counter() - start
    rows = {}
    for intervals in INTERVALS:
        res = evaluate(model, data.test_dataloader(), intervals=intervals, ensemble=cfg["ensemble"], seed=seed + 1,
                       device=device, solver=cfg["solver"])
        rows[intervals] = res
    info = {"losses": losses, "val_curve": curve, "train_seconds": train_time, "init_state": init,
            "eval_seconds": time.perf_counter() - start - train_time}
    return rows, info


def summarize(system: str, results: dict) -> tuple[list[dict], list[dict]]:
    rows, claims = [], []
    for path, (tests, info) in results.items():
        val_auc = sum(c["val_rfne"] for c in info["val_curve"]) / len(info["val_curve"])
        for intervals, res in tests.items():
            rows.append({"system": system, "path": path, "intervals": intervals,
                         "rfne": float(res["rfne"].mean()), "crps": float(res["crps"].mean()),
                         "spread_skill": float(res["spread_skill"].mean()), "mse": float(res["mse"].mean()),
                         "val_rfne_mean": val_auc, "final_loss": info["losses"][-1]["loss"] if info["losses"] else math.nan,
                         "train_s": info["train_seconds"], "eval_s": info["eval_seconds"]})
    by = {(r["path"], r["intervals"]): r for r in rows}
    paths = list(results)
    val_auc = {p: by[(p, INTERVALS[0])]["val_rfne_mean"] for p in paths}
    best = {p: min(by[(p, i)]["rfne"] for i in INTERVALS) for p in paths}
    at10 = {p: by[(p, 10)]["rfne"] for p in paths}
    fastest = min(val_auc, key=val_auc.get)
    claims.append({"system": system, "claim": "bridge converges fastest (lowest mean val RFNE over checkpoints)",
                   "holds": fastest == "bridge",
                   "detail": f"bridge {val_auc['bridge']:.4g}; best {fastest} {val_auc[fastest]:.4g}"})
    lowest = min(best, key=best.get)
    claims.append({"system": system, "claim": "bridge has the lowest test RFNE (best over interval counts)",
                   "holds": lowest == "bridge", "detail": f"bridge {best['bridge']:.4g}; best {lowest} {best[lowest]:.4g}"})
    lowest10 = min(at10, key=at10.get)
    claims.append({"system": system, "claim": "bridge has the lowest test RFNE at 10 intervals",
                   "holds": lowest10 == "bridge",
                   "detail": f"bridge {at10['bridge']:.4g}; best {lowest10} {at10[lowest10]:.4g}"})
    r50 = by[("bridge", 50)]["rfne"]
    for k in (5, 10):
        rel = by[("bridge", k)]["rfne"] / r50 - 1
        claims.append({"system": system, "claim": f"bridge RFNE at {k} intervals within 5% of 50 intervals",
                       "holds": abs(rel) <= 0.05, "detail": f"{by[('bridge', k)]['rfne']:.4g} vs {r50:.4g} ({rel:+.1%})"})
    return rows, claims


def ar1_rows(results: dict, data: PDETrajectories, horizon: int) -> list[dict]:
    a, q = 0.9, 0.1
    rows = []
    for path, (tests, _) in results.items():
        for intervals in (2, 10, 50):
            res = tests[intervals]
            rows.append({"path": path, "intervals": intervals, "mse_lead1": float(res["mse"][0]),
                         "optimal_mse_lead1": q**2,
                         f"mse_lead{horizon}": float(res["mse"][horizon - 1]),
                         f"optimal_mse_lead{horizon}": ar1_optimal_forecast(torch.zeros(1).numpy(), lead=horizon,
                                                                            coefficient=a, noise_std=q)[1] ** 2,
                         "spread_lead1": float(res["spread"][0]), "optimal_spread_lead1": q,
                         "spread_skill_lead1": float(res["spread_skill"][0]), "crps_lead1": float(res["crps"][0])})
    return rows


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the full comparison (latent space, 64², long training)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--paths", nargs="*", default=list(PATHS), help=f"subset of {list(PATHS)}")
    parser.add_argument("--systems", nargs="*", default=None, help="subset of navier_stokes diffusion_reaction ar1")
    parser.add_argument("--steps", type=int, default=None, help="override the training steps per path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    if args.quick == args.full:
        parser.error("choose exactly one of --quick and --full")
    unknown = sorted(set(args.paths) - set(PATHS))
    if unknown or "bridge" not in args.paths:
        parser.error(f"--paths must include 'bridge' and come from {list(PATHS)}; got unknown {unknown}")
    torch.set_num_threads(args.threads)
    cfg = settings(args.quick)
    if args.steps:
        cfg["steps"] = cfg["ar1_steps"] = args.steps
    systems = args.systems or [*cfg["systems"], "ar1"]
    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    all_rows, all_claims, curves, ar_table = [], [], {}, []
    for system in systems:
        t_sys = time.perf_counter()
        if system == "ar1":
            spec = cfg["ar1"]
            sub = dict(cfg, mode="pixel", patch=1)
            data = make_data("linear_ar1", spec, sub, args.seed)
            steps = cfg["ar1_steps"]
            autoencoder = None
        else:
            spec = cfg["systems"][system]
            sub = cfg
            data = make_data(system, spec, cfg, args.seed)
            steps = cfg["steps"]
            autoencoder = train_autoencoder(data, cfg, args.device) if cfg["mode"] == "latent" else None
        gen_s = time.perf_counter() - t_sys
        results, init_state = {}, None
        for path in args.paths:
            tests, info = run_path(path, data, sub, init_state, steps=steps, seed=args.seed, device=args.device,
                                   autoencoder=autoencoder)
            init_state = info.pop("init_state")
            results[path] = (tests, info)
            print(f"[{system}] {path}: train {info['train_seconds']:.0f}s eval {info['eval_seconds']:.0f}s "
                  f"val {[round(c['val_rfne'], 3) for c in info['val_curve']]} "
                  f"test rfne@10 {float(tests[10]['rfne'].mean()):.4f}", flush=True)
        curves[system] = {p: {"losses": i["losses"], "val_curve": i["val_curve"]} for p, (_, i) in results.items()}
        if system == "ar1":
            ar_table = ar1_rows(results, data, cfg["horizon"])
            rows, _ = summarize(system, results)
            all_rows += rows
        else:
            rows, claims = summarize(system, results)
            all_rows += rows
            all_claims += claims
        print(f"[{system}] data {gen_s:.0f}s, total {time.perf_counter() - t_sys:.0f}s", flush=True)
    wall = time.perf_counter() - t_start
    load_after = os.getloadavg()[0]
    cols = ["system", "path", "intervals", "rfne", "crps", "spread_skill", "mse", "val_rfne_mean", "final_loss"]
    print(markdown_table(all_rows, cols))
    print()
    print(markdown_table(all_claims, ["system", "claim", "holds", "detail"]))
    if ar_table:
        print()
        print(markdown_table(ar_table))
    print(f"\nwall {wall:.0f} s; 1-min load average {load_before:.1f} before, {load_after:.1f} after; "
          f"torch threads {args.threads}; device {args.device}")
    write_results(args.out, name="flow_matching_paths", rows=all_rows, claims=all_claims, ar1=ar_table,
                  curves=curves, settings={k: v for k, v in cfg.items()}, wall_seconds=wall,
                  load_average=[load_before, load_after], quick=args.quick)


if __name__ == "__main__":
    main()
