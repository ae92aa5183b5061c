"""Training throughput of the shipped full configs, before and after the issue-24 speed settings, in one run.

    python benchmarks/training_throughput.py --steps 300 --warmup 60 --out benchmarks/results/training_throughput.json
    python benchmarks/training_throughput.py --configs listops cgm_gm --variants before eager_nosync compiled
    python benchmarks/training_throughput.py --quick --variants before eager_nosync   # CPU smoke run, tiny sizes

For each (config, variant) a child process builds the model, data and trainer from the config through the project's
CLI (``framework.cli.main(..., run=False)``) plus the variant's overrides, runs ``trainer.fit`` for ``warmup + steps``
optimizer steps without validation, and reports steps/s over the last ``steps`` steps (CUDA synchronised at both
ends), the peak GPU memory (``torch.cuda.max_memory_allocated``), the mean GPU utilisation sampled every 0.1 s with
NVML over the timed steps (``nvidia-ml-py``; ``None`` where it is missing or on CPU), the seconds before the first
step and through warm-up (start-up, data, compilation) and the first / last training losses (a sanity check that the
variant trains the same problem). Ratios are against ``before`` of the same config in the same run.

Configs (the shipped full settings; only the data set sizes are cut where generation would dominate the call and the
step cost does not depend on them):

- ``listops``: ``configs/ssm/listops_s4d.yaml`` (16k of the 96k training trees: same length distribution);
- ``cgm_gm``: ``configs/cgm_gm/sfba_synthetic.yaml``;
- ``flow_matching``: ``configs/flow_matching/navier_stokes_bridge.yaml`` (latent, 64²), with an untrained autoencoder
  of ``ae_navier_stokes.yaml``'s architecture saved first (throughput does not depend on its weights), 24 trajectories;
- ``tinymem``: ``configs/tinymem/train_mult_noise_4layer.yaml``.

Variants: ``before`` (the config as shipped), ``eager_nosync`` (no per-step host syncs: progress bar off, fused
optimizer, pinned memory; ListOps length buckets; bf16-mixed where the config has none), ``compiled`` (plus
``torch.compile`` of the model's hot module) and ``cudagraphs`` (plus compile mode ``reduce-overhead``) add up in
this order. ``static``: no per-step host syncs (as ``eager_nosync``) and one input shape for the whole run (ListOps:
every batch padded to ``seq_len``; 6 loader workers; CGM-GM: 4 loader workers for the per-batch STFT); ``graphed``: ``static`` plus
``framework.callbacks.cuda_graph_modules.CUDAGraphModules`` on the hot module (ListOps ``backbone``, CGM-GM
``network.prior``: its 131-step GRU unroll), whose forward and backward replay as two CUDA graphs;
``static_cudagraphs``: ``static`` plus ``torch.compile`` mode ``reduce-overhead`` (one shape, so one compilation).
The JSON is rewritten after every row (``complete: false`` until the end), so a call cut short keeps its rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.harness import benchmark_parser, environment, markdown_table, write_results  # noqa: E402
from framework.atomic_files import write_json_atomic  # noqa: E402

CONFIGS = {
    "listops": "configs/ssm/listops_s4d.yaml",
    "cgm_gm": "configs/cgm_gm/sfba_synthetic.yaml",
    "flow_matching": "configs/flow_matching/navier_stokes_bridge.yaml",
    "tinymem": "configs/tinymem/train_mult_noise_4layer.yaml",
}
CUMULATIVE = ("before", "eager_nosync", "compiled", "cudagraphs")
VARIANTS = (*CUMULATIVE, "static", "graphed", "static_cudagraphs")
LISTOPS_BUCKETS = "[1280,1536,1792]"  # + seq_len 2048: four static shapes, so few recompilations

# Overrides that every variant of a config gets (data sizes; see the module docstring).
BASE = {
    "listops": ["--data.init_args.num_train=16000"],
    "cgm_gm": [],
    "flow_matching": ["--data.init_args.num_trajectories=24", "--data.init_args.val_trajectories=2",
                      "--data.init_args.test_trajectories=2"],
    "tinymem": [],
}
NOSYNC_COMMON = ["--trainer.enable_progress_bar=false", "--model.init_args.optimizer.init_args.fused=true"]
NOSYNC = {
    "listops": [*NOSYNC_COMMON, "--data.init_args.pin_memory=true", f"--data.init_args.length_buckets={LISTOPS_BUCKETS}"],
    "cgm_gm": [*NOSYNC_COMMON],
    "flow_matching": [*NOSYNC_COMMON, "--trainer.precision=bf16-mixed"],
    "tinymem": [*NOSYNC_COMMON, "--trainer.precision=bf16-mixed"],
}
COMPILE = {  # how each config compiles its hot module
    "listops": ["--model.init_args.compile=true"],
    "cgm_gm": ["--model.init_args.compile=true"],
    "flow_matching": ["--trainer.callbacks+=framework.callbacks.compile_modules.CompileModules",
                      "--trainer.callbacks.modules=[vector_field]"],
    "tinymem": ["--trainer.callbacks+=framework.callbacks.compile_modules.CompileModules",
                "--trainer.callbacks.modules=[model]"],
}
CUDAGRAPHS = {
    "listops": ["--model.init_args.compile_mode=reduce-overhead"],
    "cgm_gm": ["--model.init_args.compile_mode=reduce-overhead"],
    "flow_matching": ["--trainer.callbacks.mode=reduce-overhead"],
    "tinymem": ["--trainer.callbacks.mode=reduce-overhead"],
}


# One input shape for the whole run (ListOps: every batch padded to seq_len 2048; the others have static shapes), no
# per-step host syncs: the base of the CUDA-graph variants.
STATIC = {
    "listops": [*NOSYNC_COMMON, "--data.init_args.pin_memory=true", "--data.init_args.pad_to_seq_len=true",
                "--data.init_args.num_workers=6"],
    "cgm_gm": [*NOSYNC_COMMON, "--data.init_args.num_workers=4", "--data.init_args.pin_memory=true"],
    "flow_matching": [*NOSYNC_COMMON, "--trainer.precision=bf16-mixed"],
    "tinymem": [*NOSYNC_COMMON, "--trainer.precision=bf16-mixed"],
}
GRAPHED_MODULES = {"listops": "[backbone]", "cgm_gm": "[network.prior]", "flow_matching": "[vector_field]",
                   "tinymem": "[model]"}


def variant_overrides(config: str, variant: str) -> list[str]:
    """The CLI overrides of ``variant`` for ``config``.

    ``before`` .. ``cudagraphs`` are cumulative (each adds to the previous one); ``static`` is ``STATIC``; ``graphed``
    adds ``CUDAGraphModules`` (the hot module's forward + backward replayed as CUDA graphs) to ``static``;
    ``static_cudagraphs`` adds ``torch.compile`` mode ``reduce-overhead`` to ``static``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {list(VARIANTS)}")
    if variant == "static":
        return [*BASE[config], *STATIC[config]]
    if variant == "graphed":
        return [*BASE[config], *STATIC[config],
                "--trainer.callbacks+=framework.callbacks.cuda_graph_modules.CUDAGraphModules",
                f"--trainer.callbacks.modules={GRAPHED_MODULES[config]}"]
    if variant == "static_cudagraphs":
        return [*BASE[config], *STATIC[config], *COMPILE[config], *CUDAGRAPHS[config]]
    steps = CUMULATIVE[: CUMULATIVE.index(variant) + 1]
    args = list(BASE[config])
    for name, table in (("eager_nosync", NOSYNC), ("compiled", COMPILE), ("cudagraphs", CUDAGRAPHS)):
        if name in steps:
            args += table[config]
    return args


# ---------------------------------------------------------------------------------------------------- child side
class _GPUUtilisation:
    """Samples NVML GPU utilisation every 0.1 s between start() and stop(); ``mean`` is None without NVML."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import pynvml
            import torch

            pynvml.nvmlInit()
            index = torch.cuda.current_device() if torch.cuda.is_available() else None
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index) if index is not None else None
            self._nvml = pynvml
        except Exception:  # no NVML (CPU machine, or nvidia-ml-py missing): report None
            self._handle = None

    def start(self) -> None:
        if self._handle is None:
            return

        def sample() -> None:
            while not self._stop.wait(0.1):
                self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def _progress_writer(result: Path, t0: float):
    """Where a child run has got to, in ``RESULT.progress.json``: what a parent reports when it abandons the run
    (a timed-out row then says whether set-up or training ate the time)."""
    path = result.with_name(result.name + ".progress.json")

    def write(stage: str, step: int | None = None) -> None:
        write_json_atomic(path, {"stage": stage, "seconds": round(time.perf_counter() - t0, 1), "step": step})

    return write


def _timing_callback(warmup: int, record: dict, progress=None):
    import lightning.pytorch as pl
    import torch

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    class Timing(pl.Callback):
        def __init__(self) -> None:
            self.utilisation = _GPUUtilisation()
            self.first_loss = None
            self.last_loss = None

        def on_train_start(self, trainer, pl_module) -> None:
            sync()
            record["seconds_to_first_step"] = round(time.perf_counter() - record["_t0"], 2)
            if progress is not None:
                progress("training started", 0)
            self.warm_start = time.perf_counter()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            if trainer.global_step == 1:
                self.first_loss = float(loss)  # one sync, before the timed window
            if progress is not None and (trainer.global_step in (1, warmup) or trainer.global_step % 50 == 0):
                progress("warm-up" if trainer.global_step < warmup else "timed steps", trainer.global_step)
            if trainer.global_step == warmup:
                sync()
                record["warmup_seconds"] = round(time.perf_counter() - self.warm_start, 2)
                self.start, self.start_step = time.perf_counter(), trainer.global_step
                self.utilisation.start()

        def on_train_end(self, trainer, pl_module) -> None:
            sync()
            self.utilisation.stop()
            seconds = time.perf_counter() - self.start
            steps = trainer.global_step - self.start_step
            record.update(steps=steps, seconds=round(seconds, 3), steps_per_second=round(steps / seconds, 2),
                          ms_per_step=round(1000 * seconds / steps, 3), gpu_utilisation_percent=self.utilisation.mean,
                          first_loss=self.first_loss)
            if torch.cuda.is_available():
                record["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)

    return Timing()


def _untrained_autoencoder(path: Path) -> None:
    """Save a FrameAutoencoder of ae_navier_stokes.yaml's architecture as a checkpoint the forecaster can load."""
    import lightning.pytorch as pl
    import torch

    from framework.cli import main

    cli = main(["--config", str(REPO / "configs/flow_matching/ae_navier_stokes.yaml"),
                "--trainer.logger=false"], run=False)
    model = cli.model
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": pl.__version__}, path)


def sweep_args(config: str) -> list[str]:
    """The config's ``# sweep-args:`` line: the tiny sizes the config sweep test runs it with."""
    import shlex

    for line in (REPO / CONFIGS[config]).read_text().splitlines():
        if line.startswith("# sweep-args:"):
            return shlex.split(line.removeprefix("# sweep-args:"))
    return []


def run_child(config: str, variant: str, steps: int, warmup: int, result: Path, *, tiny: bool) -> None:
    import torch

    from framework.cli import main

    record: dict = {"config": config, "variant": variant, "_t0": time.perf_counter()}
    progress = _progress_writer(result, record["_t0"])
    progress("set-up (config, data, model)")
    workdir = Path(tempfile.mkdtemp(prefix=f"throughput-{config}-"))
    overrides = variant_overrides(config, variant)
    if tiny:  # the sweep's 64-token ListOps sequences need buckets below 64
        overrides = [("--data.init_args.length_buckets=[32,48]" if a.startswith("--data.init_args.length_buckets=")
                      else a) for a in overrides]
    args = ["--config", str(REPO / CONFIGS[config]), *overrides, *(sweep_args(config) if tiny else []),
            f"--trainer.max_steps={warmup + steps}", "--trainer.limit_val_batches=0", "--trainer.max_epochs=-1",
            f"--trainer.default_root_dir={workdir}", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.init_args.save_dir={workdir}"]
    if config == "flow_matching" and not tiny:  # the tiny sweep settings train end to end (no checkpoint)
        sys.argv = sys.argv[:1]
        ae = workdir / "ae.ckpt"
        _untrained_autoencoder(ae)
        args.append(f"--model.init_args.autoencoder_checkpoint={ae}")
    os.chdir(workdir)  # checkpoints of the configs' ModelCheckpoint land here
    sys.argv = sys.argv[:1]  # the CLI parses ``args`` only
    cli = main(args, run=False)
    progress("set-up done, fit starting (data preparation, loaders)")
    timing = _timing_callback(warmup, record, progress)
    cli.trainer.callbacks.append(timing)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    graphs = [c.final_stats for c in cli.trainer.callbacks if type(c).__name__ == "CUDAGraphModules"]
    if graphs:
        record["cuda_graphs"] = graphs[0]  # captured signatures, replays and eager calls per module
    record["last_loss"] = float(cli.trainer.callback_metrics.get("train/loss", torch.tensor(float("nan"))))
    record.pop("_t0")
    record["overrides"] = variant_overrides(config, variant)
    write_json_atomic(result, record, keep_nonfinite=True)


# ---------------------------------------------------------------------------------------------------- parent side
def main() -> None:
    parser = benchmark_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=300, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=60, help="untimed steps first (compilation, cuDNN autotuning)")
    parser.add_argument("--timeout", type=float, default=420, help="seconds per child run before it is abandoned")
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "VARIANT", "RESULT"), help=argparse_suppress())
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 2:
        parser.error(f"need --steps >= 1 and --warmup >= 2, got {args.steps}, {args.warmup}")
    if args.child:
        config, variant, result = args.child
        run_child(config, variant, args.steps, args.warmup, Path(result), tiny=args.quick)
        return
    if args.quick:  # a CPU smoke run of the machinery: the configs' tiny sweep sizes, a few steps
        args.steps, args.warmup = min(args.steps, 6), min(args.warmup, 3)
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            for variant in args.variants:
                result = Path(tmp) / f"{config}-{variant}.json"
                command = [sys.executable, str(Path(__file__).resolve()), "--steps", str(args.steps), "--warmup",
                           str(args.warmup), "--child", config, variant, str(result), *(["--quick"] if args.quick else [])]
                print(f"[{time.perf_counter() - started:6.0f}s] {config} / {variant}", flush=True)
                t0 = time.perf_counter()
                try:
                    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=args.timeout)
                    failed = proc.returncode != 0 or not result.exists()
                    tail = (proc.stdout + proc.stderr)[-1500:] if failed else ""
                except subprocess.TimeoutExpired:
                    failed, tail = True, f"timed out after {args.timeout:.0f} s{_progress_note(result)}"
                if failed:
                    print(tail, flush=True)
                    rows.append({"config": config, "variant": variant, "error": tail.strip().splitlines()[-1:]})
                else:
                    row = json.loads(result.read_text())
                    row["wall_seconds"] = round(time.perf_counter() - t0, 1)
                    rows.append(row)
                    print(f"   {row['steps_per_second']} steps/s, peak {row.get('peak_memory_gib')} GiB, "
                          f"util {row.get('gpu_utilisation_percent')}", flush=True)
                _add_speedups(rows)  # written after every row: a call cut short keeps what it measured
                write_results(args.out, name="training_throughput", rows=rows, steps=args.steps, warmup=args.warmup,
                              wall_seconds=round(time.perf_counter() - started, 1), complete=False)
    _add_speedups(rows)
    columns = ["config", "variant", "steps_per_second", "ms_per_step", "speedup", "gpu_utilisation_percent",
               "peak_memory_gib", "seconds_to_first_step", "warmup_seconds", "first_loss", "last_loss", "wall_seconds"]
    print(markdown_table(rows, columns))
    write_results(args.out, name="training_throughput", rows=rows, steps=args.steps, warmup=args.warmup,
                  wall_seconds=round(time.perf_counter() - started, 1), complete=True,
                  child_environment=environment())


def _progress_note(result: Path) -> str:
    """``" in <stage> (step n, at t s)"`` from a child's progress file, or a note that it never wrote one."""
    path = result.with_name(result.name + ".progress.json")
    try:
        last = json.loads(path.read_text())
    except (OSError, ValueError):
        return " before the child's first progress record (interpreter start-up and imports)"
    step = "" if last.get("step") is None else f"step {last['step']}, "
    return f" in {last['stage']} ({step}last record at {last['seconds']} s)"


def _add_speedups(rows: list[dict]) -> None:
    """``speedup``: steps/s over the same config's ``before`` row of this run."""
    for row in rows:
        base = next((r for r in rows if r["config"] == row["config"] and r["variant"] == "before"
                     and "steps_per_second" in r), None)
        if base is not None and "steps_per_second" in row:
            row["speedup"] = round(row["steps_per_second"] / base["steps_per_second"], 2)


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
