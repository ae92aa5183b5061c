"""CGM-GM reproduction on the synthetic SFBA catalog: generated vs held-out records, seismologically.

    python benchmarks/cgm_gm.py [--quick] [--out benchmarks/results/cgm_gm.json] [--device cuda]

Data (``framework.datamodules.ground_motion.GroundMotionCatalog``): stochastic point-source records (Brune source, R^-1/R^-0.5
spreading, Q = 180 f^0.45, κ0 and WNA rock amplification, smooth site / κ / stress-drop fields), 60 s at 100 Hz,
EW velocity; events split 70 / 10 / 20 into train / val / test. Model: the best CGM-GM configuration
(``framework.models.cgm_gm.CGMGM``, 173,009 parameters, β = 0.2, α = 0.05, Adam with weight decay 1e-5). Evaluation: one
generated record per held-out condition (Griffin–Lim), against the held-out records themselves:

* KO-smoothed (b = 20) ln FAS residuals against the ergodic SFBA GMM at 2 / 5 / 10 / 15 Hz: generated mean within
  ±0.2 of the held-out mean, generated std within ±25 % of the held-out std;
* the magnitude and ln-distance slopes of ln FAS (least squares with depth): right sign and within ±25 % of the
  held-out slope (our reading of "the right slopes");
* PGV medians per (M, R) bin with at least 5 held-out records: generated / held-out within [1/1.5, 1.5];
* discriminative score (GRU post-hoc classifier on log10 Hann spectrograms) < 0.2;
* the empirical baseline: the GMM itself (mean residual 0, its σ).

``--quick`` trains fewer records / steps with a larger learning rate and uses a smaller evaluation budget (all
settings go into the JSON); the full run (``--device cuda``) uses the paper's batch size and learning rate.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import benchmark_parser, markdown_table, write_results
from framework.atomic_files import write_json_atomic
from framework.datamodules.ground_motion import GroundMotionCatalog
from framework.metrics.ground_motion import (
    FASResiduals,
    PeakMotionMedians,
    discriminative_score,
    gmm_sigma,
    log_spectrogram_features,
)
from framework.models.cgm_gm import CGMGM

FREQUENCIES = (2.0, 5.0, 10.0, 15.0)


def settings(quick: bool) -> dict:
    if quick:
        return {"num_records": 2400, "batch_size": 64, "lr": 2e-3, "steps": 1000, "griffin_lim_iterations": 100,
                "disc_iterations": 300, "disc_repeats": 3, "samples_per_condition": 1}
    return {"num_records": 5000, "batch_size": 128, "lr": 8e-4, "steps": 20000, "griffin_lim_iterations": 500,
            "disc_iterations": 2000, "disc_repeats": 10, "samples_per_condition": 1}


# What the script fixes beyond ``settings()`` (the shipped config configs/cgm_gm/sfba_synthetic_20k.yaml carries the
# same values; tests/benchmarks/test_cgm_gm_20k_config.py compares them).
DATA_SEED = 0  # the catalog's generation / split / shuffling seed
EVAL_BATCH_SIZE = 256  # held-out records per generation batch in evaluate()
GRAPHED_MODULES = ["network.prior"]  # what --cuda-graphs replays as CUDA graphs (CUDAGraphModules)


def make_datamodule(cfg: dict, *, cache_dir: str | None = None, num_workers: int = 0,
                    pin_memory: bool = False) -> GroundMotionCatalog:
    """The catalog of a run with settings ``cfg`` (not yet prepared / set up)."""
    return GroundMotionCatalog(num_records=cfg["num_records"], batch_size=cfg["batch_size"], seed=DATA_SEED,
                               cache_dir=cache_dir, num_workers=num_workers, pin_memory=pin_memory)


def make_model(cfg: dict, *, compile: bool = False, compile_mode: str | None = None, fused: bool = False) -> CGMGM:
    """The model of a run with settings ``cfg``: the best configuration, Adam (weight decay 1e-5) at a constant
    ``cfg["lr"]`` (no scheduler). Seed the global RNGs first: the weights are drawn here."""
    return CGMGM(kl_weight=0.2, time_loss_weight=0.05, griffin_lim_iterations=cfg["griffin_lim_iterations"],
                 compile=compile, compile_mode=compile_mode,
                 optimizer=lambda p: torch.optim.Adam(p, lr=cfg["lr"], weight_decay=1e-5, fused=fused or None))


def trainer_kwargs(cfg: dict, device: str, max_minutes: float | None = None) -> dict:
    """``lightning.pytorch.Trainer`` arguments of the training run (callbacks excluded): ``cfg["steps"]`` optimizer
    steps, no validation (nor sanity check), no gradient clipping, full precision."""
    return dict(max_steps=cfg["steps"], accelerator="gpu" if device.startswith("cuda") else "cpu",
                devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                max_time=None if max_minutes is None else {"minutes": max_minutes})


def train(data: GroundMotionCatalog, cfg: dict, seed: int, device: str,
          max_minutes: float | None = None, *, chunk_dir: Path | None = None, chunk_seconds: float | None = None,
          compile: bool = False, compile_mode: str | None = None, fused: bool = False,
          cuda_graphs: bool = False) -> tuple[CGMGM, float]:
    """Train; with ``chunk_dir`` the fit is one slot of a longer run: it resumes from ``chunk_dir/chunk.ckpt`` when
    present, stops at the last epoch end that fits ``chunk_seconds`` and leaves the checkpoint there
    (``cfg["chunk_finished"]`` says whether all steps are done)."""
    import lightning.pytorch as pl

    from framework.callbacks.epoch_time_limit import EpochBoundaryTimeLimit
    from framework.callbacks.rng_state import RNGStateCheckpoint

    class Progress(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            if step % 50 == 0 or step == cfg["steps"]:
                print(f"  step {step}/{cfg['steps']}  loss {float(outputs['loss']):.2f}  "
                      f"{time.perf_counter() - start:.0f} s", flush=True)

    pl.seed_everything(seed, workers=True, verbose=False)
    model = make_model(cfg, compile=compile, compile_mode=compile_mode, fused=fused)
    callbacks: list = [Progress()]
    if cuda_graphs:  # the 131-frame prior unroll's forward and backward as two CUDA graph launches (issue 24)
        from framework.callbacks.cuda_graph_modules import CUDAGraphModules

        callbacks.append(CUDAGraphModules(modules=GRAPHED_MODULES))
    ckpt_path = None
    if chunk_dir is not None:
        limit = EpochBoundaryTimeLimit(seconds=chunk_seconds, checkpoint_path=str(chunk_dir / "chunk.ckpt"))
        callbacks += [limit, RNGStateCheckpoint()]
        if (chunk_dir / "chunk.ckpt").exists():
            ckpt_path = str(chunk_dir / "chunk.ckpt")
    trainer = pl.Trainer(**trainer_kwargs(cfg, device, max_minutes), callbacks=callbacks)
    start = time.perf_counter()
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    cfg["steps_taken"] = trainer.global_step
    if chunk_dir is not None:
        cfg["chunk_finished"] = trainer.global_step >= cfg["steps"]
        cfg.setdefault("chunks", []).append({"resumed_from": ckpt_path is not None, "steps_after": trainer.global_step,
                                             "seconds": round(time.perf_counter() - start, 1)})
    return model.to(device).eval(), time.perf_counter() - start


@torch.no_grad()
def evaluate(model: CGMGM, data: GroundMotionCatalog, cfg: dict, seed: int, device: str) -> dict:
    test = data.datasets["test"]
    loader = data.make_dataloader(test, shuffle=False, batch_size=EVAL_BATCH_SIZE)
    generator = torch.Generator(device=device).manual_seed(seed)
    real_fas, gen_fas = FASResiduals(dt=data.dt), FASResiduals(dt=data.dt)
    real_pk, gen_pk = PeakMotionMedians(dt=data.dt), PeakMotionMedians(dt=data.dt)
    real_feat, gen_feat = [], []
    s = cfg["samples_per_condition"]
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        generated = model.generate(batch["condition"], s, generator=generator).double()
        m, r, z = batch["magnitude"], batch["rupture_distance"], batch["depth"]
        real_fas.update(batch["waveform"].double(), m, r, z)
        gen_fas.update(generated, m.repeat_interleave(s), r.repeat_interleave(s), z.repeat_interleave(s))
        real_pk.update(batch["waveform"].double(), m, r)
        gen_pk.update(generated, m.repeat_interleave(s), r.repeat_interleave(s))
        real_feat.append(log_spectrogram_features(batch["waveform"].float()).cpu())
        gen_feat.append(log_spectrogram_features(generated[::s].float()).cpu())
    print(f"  generated {sum(len(f) for f in gen_feat)} records; discriminative score ...", flush=True)
    with torch.enable_grad():
        # the post-hoc classifier trains on the evaluation device (20,000 GRU steps in the full run)
        disc = discriminative_score(torch.cat(real_feat).to(device), torch.cat(gen_feat).to(device),
                                    iterations=cfg["disc_iterations"],
                                    repeats=cfg["disc_repeats"], seed=seed)
    return {"real_fas": real_fas.compute(), "gen_fas": gen_fas.compute(), "real_pk": real_pk.compute(),
            "gen_pk": gen_pk.compute(), "pk_counts": real_pk.compute(), "discriminative": disc}


@torch.no_grad()
def griffin_lim_oracle(data: GroundMotionCatalog, cfg: dict, seed: int) -> list[dict]:
    """Griffin–Lim of the *true* held-out amplitudes, scored like generated records: the evaluation pipeline's floor."""
    from framework.models.components.cgm_gm import griffin_lim

    test = data.datasets["test"]
    waves, meta = test.waveforms.double(), test.metadata
    rebuilt = griffin_lim(data.transform(test.waveforms).abs(), data.transform, n_iter=cfg["griffin_lim_iterations"],
                          generator=torch.Generator().manual_seed(seed)).double()
    fas = {}
    peaks = {}
    for name, w in (("held-out", waves), ("Griffin-Lim", rebuilt)):
        metric = FASResiduals(dt=data.dt)
        metric.update(w, meta["magnitude"], meta["rupture_distance"], meta["depth"])
        fas[name] = metric.compute()
        metric = PeakMotionMedians(dt=data.dt)
        metric.update(w, meta["magnitude"], meta["rupture_distance"])
        peaks[name] = metric.compute()
    rows = []
    for f in FREQUENCIES:
        tag = f"{f:g}hz"
        rows.append({"f (Hz)": f, **{f"{key} {n}": float(fas[n][f"{key}_{tag}"]) for key in (
            "residual_mean", "residual_std", "slope_magnitude", "slope_ln_distance") for n in fas}})
    for key, count in peaks["held-out"].items():
        if key.startswith("count_") and float(count) >= 5:
            label = key.removeprefix("count_")
            rows.append({"bin": label, "n": int(count), "PGV ratio Griffin-Lim / held-out":
                         float(peaks["Griffin-Lim"][f"pgv_median_{label}"] / peaks["held-out"][f"pgv_median_{label}"])})
    return rows


def build_parser():
    """The command-line options (defaults included; tests parse the recorded commands with it)."""
    parser = benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3407)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=None, help="override the number of training steps")
    parser.add_argument("--max-train-minutes", type=float, default=None,
                        help="wall-clock cap on training (Lightning max_time); the steps taken go into the JSON")
    parser.add_argument("--griffin-lim-iterations", type=int, default=None, help="override the Griffin-Lim iterations")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--chunk-dir", type=Path, default=None,
                        help="train in slots: resume from / leave CHUNK_DIR/chunk.ckpt; evaluate after the last slot")
    parser.add_argument("--chunk-seconds", type=float, default=420.0, help="training seconds of this slot")
    parser.add_argument("--compile", action="store_true", help="torch.compile the dynamic VAE (issue 24)")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. reduce-overhead")
    parser.add_argument("--fused", action="store_true", help="fused Adam (CUDA)")
    parser.add_argument("--num-workers", type=int, default=0,
                        help="DataLoader workers (each batch's STFT runs on the loading process; 4 on a GPU host)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="replay the prior's unroll as CUDA graphs (framework.callbacks.cuda_graph_modules)")
    parser.add_argument("--oracle-only", action="store_true",
                        help="no training: score Griffin-Lim of the true held-out amplitudes (the pipeline's floor)")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = settings(args.quick)
    if args.max_train_minutes is not None and args.max_train_minutes <= 0:
        parser.error(f"--max-train-minutes must be > 0, got {args.max_train_minutes}")
    if not args.chunk_seconds > 0:  # checked before the catalog is generated, not when the callback is built
        parser.error(f"--chunk-seconds must be > 0, got {args.chunk_seconds}")
    if args.steps is not None:
        cfg["steps"] = args.steps
    if args.griffin_lim_iterations is not None:
        cfg["griffin_lim_iterations"] = args.griffin_lim_iterations
    load_before = os.getloadavg()
    wall_start = time.perf_counter()
    data = make_datamodule(cfg, cache_dir=args.cache_dir, num_workers=args.num_workers,
                           pin_memory=args.device.startswith("cuda"))
    data.prepare_data()
    data.setup("fit")
    data_seconds = time.perf_counter() - wall_start
    if args.oracle_only:
        rows = griffin_lim_oracle(data, cfg, args.seed)
        print(f"Griffin-Lim ({cfg['griffin_lim_iterations']} iterations) of the true held-out amplitudes:\n")
        print(markdown_table([r for r in rows if "f (Hz)" in r]))
        print()
        print(markdown_table([r for r in rows if "bin" in r]))
        print(f"\nWall time {time.perf_counter() - wall_start:.0f} s")
        write_results(args.out, name="cgm_gm_griffin_lim_oracle", rows=rows, settings=cfg, quick=args.quick)
        return
    if args.chunk_dir is not None:
        args.chunk_dir.mkdir(parents=True, exist_ok=True)
        history = args.chunk_dir / "chunks.json"
        if history.exists():
            cfg["chunks"] = json.loads(history.read_text())
    model, train_seconds = train(data, cfg, args.seed, args.device, args.max_train_minutes, chunk_dir=args.chunk_dir,
                                 chunk_seconds=args.chunk_seconds, compile=args.compile,
                                 compile_mode=args.compile_mode, fused=args.fused, cuda_graphs=args.cuda_graphs)
    if args.chunk_dir is not None:
        write_json_atomic(args.chunk_dir / "chunks.json", cfg["chunks"], indent=1, keep_nonfinite=True)
        if not cfg["chunk_finished"]:
            print(f"slot done: {cfg['steps_taken']} of {cfg['steps']} steps; checkpoint {args.chunk_dir / 'chunk.ckpt'}"
                  f" ({(args.chunk_dir / 'chunk.ckpt').stat().st_size / 2**20:.1f} MiB); run again to continue")
            return
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    eval_start = time.perf_counter()
    result = evaluate(model, data, cfg, args.seed, args.device)
    eval_seconds = time.perf_counter() - eval_start

    rows, checks = [], {}
    sigma = gmm_sigma(FREQUENCIES)
    for k, f in enumerate(FREQUENCIES):
        tag = f"{f:g}hz"
        rm, gm = float(result["real_fas"][f"residual_mean_{tag}"]), float(result["gen_fas"][f"residual_mean_{tag}"])
        rs, gs = float(result["real_fas"][f"residual_std_{tag}"]), float(result["gen_fas"][f"residual_std_{tag}"])
        rows.append({"f (Hz)": f, "held-out mean": rm, "generated mean": gm, "Δmean": gm - rm,
                     "held-out std": rs, "generated std": gs, "std ratio": gs / rs, "GMM mean": 0.0,
                     "GMM σ": float(sigma[k]), "GMM abs(Δmean)": abs(rm), "GMM σ ratio": float(sigma[k]) / rs})
        checks[f"mean_{tag}"] = abs(gm - rm) <= 0.2
        checks[f"std_{tag}"] = abs(gs / rs - 1) <= 0.25
    slope_rows = []
    for k, f in enumerate(FREQUENCIES):
        tag = f"{f:g}hz"
        for name, key, sign in (("magnitude", "slope_magnitude", 1), ("ln R", "slope_ln_distance", -1)):
            real, gen = float(result["real_fas"][f"{key}_{tag}"]), float(result["gen_fas"][f"{key}_{tag}"])
            ok = gen * sign > 0 and abs(gen / real - 1) <= 0.25
            slope_rows.append({"f (Hz)": f, "slope": name, "held-out": real, "generated": gen,
                               "ratio": gen / real, "pass": ok})
            checks[f"slope_{name}_{tag}"] = ok
    pgv_rows = []
    for key, count in result["pk_counts"].items():
        if not key.startswith("count_") or float(count) < 5:
            continue
        label = key.removeprefix("count_")
        real, gen = float(result["real_pk"][f"pgv_median_{label}"]), float(result["gen_pk"][f"pgv_median_{label}"])
        ratio = gen / real
        ok = 1 / 1.5 <= ratio <= 1.5
        pgv_rows.append({"bin": label, "n": int(count), "held-out PGV (m/s)": real, "generated PGV (m/s)": gen,
                         "ratio": ratio, "held-out PGA": float(result["real_pk"][f"pga_median_{label}"]),
                         "generated PGA": float(result["gen_pk"][f"pga_median_{label}"]), "pass": ok})
        checks[f"pgv_{label}"] = ok
    disc_mean, disc_std = result["discriminative"]
    checks["discriminative"] = disc_mean < 0.2
    wall = time.perf_counter() - wall_start
    load_after = os.getloadavg()

    print(f"CGM-GM on the synthetic SFBA catalog ({'quick' if args.quick else 'full'}): {n_params:,} parameters, "
          f"{cfg.get('steps_taken', cfg['steps'])} of {cfg['steps']} steps, train {len(data.datasets['train'])} / "
          f"test {len(data.datasets['test'])} records")
    print("\nFAS residuals vs the ergodic SFBA GMM (ln units):\n")
    print(markdown_table(rows))
    print("\nScaling slopes of ln FAS:\n")
    print(markdown_table(slope_rows))
    print("\nPGV / PGA medians per (M, R) bin (bins with >= 5 held-out records):\n")
    print(markdown_table(pgv_rows))
    print(f"\nDiscriminative score: {disc_mean:.3f} ± {disc_std:.3f} (target < 0.2)")
    passed = sum(checks.values())
    print(f"\nTargets met: {passed} / {len(checks)}; missed: {[k for k, v in checks.items() if not v]}")
    print(f"Wall time {wall:.0f} s (data {data_seconds:.0f} s, training {train_seconds:.0f} s, evaluation "
          f"{eval_seconds:.0f} s); load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"torch threads {torch.get_num_threads()}")
    write_results(args.out, name="cgm_gm", rows=rows, slopes=slope_rows, pgv=pgv_rows,
                  discriminative_score={"mean": disc_mean, "std": disc_std}, checks=checks, settings=cfg,
                  parameters=n_params, seconds={"wall": wall, "data": data_seconds, "train": train_seconds,
                                                "eval": eval_seconds},
                  load_average={"before": load_before, "after": load_after}, quick=args.quick)


if __name__ == "__main__":
    main()
