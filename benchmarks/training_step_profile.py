"""Where the host time of one training step goes: op counts per part of the model, time per Lightning hook.

    python benchmarks/training_step_profile.py --config listops --steps 10 --out /tmp/profile_listops.json
    python benchmarks/training_step_profile.py --config cgm_gm --steps 4 -- --model.init_args.compile=false

Builds model, data and trainer from the shipped config through the project's CLI (``framework.cli.main(...,
run=False)``, as ``benchmarks/training_throughput.py`` does), with the config's real architecture but short CPU-sized
data (``--config listops``: the full 6 × 128 S4D on 64-token trees; ``cgm_gm``: the full network on 60 records), plus
any CLI overrides after ``--``. Then, over ``--steps`` training steps after ``--warmup``:

- **ops per step**: every ATen op dispatched (a ``TorchDispatchMode`` counter; on a GPU each is about one kernel
  launch, the unit of host cost in a launch-bound step), attributed to the model part whose forward is running
  (forward hooks on named sub-modules), to ``backward`` (autograd engine), ``optimizer`` (inside ``optimizer.step``
  after the closure) or ``other`` (metrics, logging, callbacks);
- **wall ms per step of each Lightning action** (``lightning.pytorch.profilers.SimpleProfiler``: data fetch,
  training_step, backward, optimizer step, every callback hook);
- **top ATen ops by self CPU time** (``torch.profiler``, ``record_shapes=False``).

Numbers are host-side: on this CPU box the op counts transfer to a GPU exactly; the milliseconds include CPU compute
and are an upper bound of the host share.

``--device cuda`` profiles the GPU side instead, at the shipped config's real sequence sizes (only the number of
training samples is cut, so the data is generated in seconds): the **top kernels by GPU time per step** (CUPTI
through ``torch.profiler``; kernels replayed inside CUDA graphs included) and the GPU-busy milliseconds per step,
beside the wall milliseconds — where a step that is GPU-bound spends its time, which the host profile cannot say:

    python benchmarks/training_step_profile.py --config listops --device cuda --steps 20 --warmup 10 \
        --out /tmp/p_listops_gpu.json -- --data.init_args.pad_to_seq_len=true \
        --trainer.callbacks+=framework.callbacks.cuda_graph_modules.CUDAGraphModules --trainer.callbacks.modules=[backbone]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.harness import benchmark_parser, environment, write_results  # noqa: E402

CONFIGS = {"listops": "configs/ssm/listops_s4d.yaml", "cgm_gm": "configs/cgm_gm/sfba_synthetic.yaml"}
# Real architecture, CPU-sized data (short sequences: the per-op host cost does not depend on the length).
SMALL_DATA = {
    "listops": ["--data.init_args.num_train=512", "--data.init_args.num_val=8", "--data.init_args.num_test=8",
                "--data.init_args.max_depth=4", "--data.init_args.min_length=10", "--data.init_args.max_length=60",
                "--data.init_args.seq_len=64", "--data.init_args.num_workers=0"],
    "cgm_gm": ["--data.init_args.num_records=300", "--data.init_args.batch_size=32"],
}
# --device cuda: the config's own sequence sizes, fewer samples (the GPU time per step does not depend on the count).
GPU_DATA = {
    "listops": ["--data.init_args.num_train=2000", "--data.init_args.num_val=64", "--data.init_args.num_test=64"],
    "cgm_gm": [],
}
# Sub-modules whose forward ops are counted separately (first match wins: deepest names first).
PARTS = {
    "listops": ["backbone.blocks.*.ssm.kernel", "backbone.blocks.*.ssm", "backbone.blocks.*.norm",
                "backbone.blocks.*.mix", "backbone.encoder", "backbone.decoder", "backbone"],
    "cgm_gm": ["network.prior", "network.posterior", "network.decoder", "network.embedding", "network"],
}
# Labels: a part's own ops are those not inside a deeper part ("backbone": the batched S4D kernels, pooling);
# "training_step": loss, metrics and logging; "optimizer": optimizer.step itself (Lightning runs training_step and
# backward inside it, as its closure; those keep their own labels); "other": callbacks, data, hooks.


def _part_modules(model, patterns: list[str]) -> list[tuple[str, object]]:
    import fnmatch

    out = []
    for name, module in model.named_modules():
        for pattern in patterns:
            if fnmatch.fnmatchcase(name, pattern):
                out.append((pattern, module))
                break
    return out


class _OpCounter:
    """Counts dispatched ATen ops per label; the label follows forward hooks, backward and optimizer.step."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if counter.active:
                    import torch

                    label = counter.stack[-1] if counter.stack else "other"
                    if torch._C._current_graph_task_id() != -1:  # inside the autograd engine
                        label = "backward"
                    counter.counts[label] += 1
                    counter.names[func.__name__] += 1
                    if func.__name__.startswith(("_local_scalar_dense", "nonzero", "unique", "_unique")):
                        counter.syncs[f"{label}: {func.__name__}"] += 1  # a host sync on a GPU (CPU tensors aside)
                return func(*args, **(kwargs or {}))

        self.mode = Mode()
        self.counts: Counter = Counter()
        self.names: Counter = Counter()
        self.syncs: Counter = Counter()
        self.stack: list[str] = []
        self.active = False

    def hook(self, model, patterns: list[str]) -> None:
        for label, module in _part_modules(model, patterns):
            module.register_forward_pre_hook(lambda m, a, label=label: self.stack.append(label))
            module.register_forward_hook(lambda m, a, o: self.stack.pop() and None)

    def hook_optimizer(self, optimizer) -> None:
        optimizer.register_step_pre_hook(lambda *a: self.stack.append("optimizer"))
        optimizer.register_step_post_hook(lambda *a: self.stack.pop() and None)


def top_kernels(events, steps: int, *, device: str, limit: int = 25) -> tuple[dict[str, float], float]:
    """({name: ms per step} of the `limit` largest self times on `device`, total ms per step of all of them).

    `events`: ``torch.profiler.profile.key_averages()``; ``device="cuda"`` reads the device time of the kernel
    events only (an ATen op's row repeats the time of the kernels it launched, so summing both would count it
    twice), ``"cpu"`` the ops' self CPU time (the host profile)."""
    from torch.autograd import DeviceType

    def self_time(event) -> float:
        if device == "cpu":
            return event.self_cpu_time_total
        if getattr(event, "device_type", None) != DeviceType.CUDA:
            return 0.0
        return getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0))

    timed = [e for e in events if self_time(e) > 0]
    ranked = sorted(timed, key=self_time, reverse=True)[:limit]
    total = sum(self_time(e) for e in timed) / 1000 / steps
    return {e.key: round(self_time(e) / 1000 / steps, 3) for e in ranked}, round(total, 3)


def profile(config: str, steps: int, warmup: int, overrides: list[str], device: str = "cpu") -> dict:
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.profilers import SimpleProfiler

    from framework.cli import main

    workdir = Path(tempfile.mkdtemp(prefix=f"step-profile-{config}-"))
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    data = GPU_DATA[config] if device == "cuda" else SMALL_DATA[config]
    args = ["--config", str(REPO / CONFIGS[config]), *data, *overrides,
            f"--trainer.max_steps={warmup + steps}", "--trainer.limit_val_batches=0", "--trainer.max_epochs=-1",
            f"--trainer.default_root_dir={workdir}", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.init_args.save_dir={workdir}",
            "--trainer.accelerator=" + ("gpu" if device == "cuda" else "cpu")]
    os.chdir(workdir)
    sys.argv = sys.argv[:1]
    cli = main(args, run=False)
    trainer, model = cli.trainer, cli.model
    counter = _OpCounter()
    counter.hook(model, PARTS[config])
    simple = SimpleProfiler()
    record: dict = {}

    class Window(pl.Callback):
        """Turns the op counter, torch.profiler and the hook timer on for the steps after warm-up."""

        def on_train_start(self, trainer, pl_module) -> None:
            for optimizer in trainer.optimizers:
                counter.hook_optimizer(optimizer)
            step = pl_module.training_step

            def labelled_training_step(*args, **kwargs):
                counter.stack.append("training_step")
                try:
                    return step(*args, **kwargs)
                finally:
                    counter.stack.pop()

            pl_module.training_step = labelled_training_step

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == warmup:
                trainer.profiler = simple  # Lightning reads trainer.profiler at every action
                activities = [torch.profiler.ProfilerActivity.CPU]
                if device == "cuda":
                    activities.append(torch.profiler.ProfilerActivity.CUDA)
                    torch.cuda.synchronize()
                self.torch_profiler = torch.profiler.profile(activities=activities, record_shapes=False)
                self.torch_profiler.__enter__()
                if device == "cpu":  # the op counter is host bookkeeping; on a GPU it would only slow the step
                    counter.mode.__enter__()
                self.t0 = time.perf_counter()
            counter.active = device == "cpu" and trainer.global_step >= warmup

        def on_train_end(self, trainer, pl_module) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
            record["ms_per_step"] = round(1000 * (time.perf_counter() - self.t0) / steps, 2)
            counter.active = False
            if device == "cpu":
                counter.mode.__exit__(None, None, None)
            self.torch_profiler.__exit__(None, None, None)
            events = self.torch_profiler.key_averages()
            record["top_ops_self_cpu_ms_per_step"], _ = top_kernels(events, steps, device="cpu", limit=20)
            if device == "cuda":
                kernels, busy = top_kernels(events, steps, device="cuda")
                record["top_kernels_gpu_ms_per_step"] = kernels
                record["gpu_busy_ms_per_step"] = busy  # summed kernel time (overlapping streams would count twice)
                record["gpu"] = torch.cuda.get_device_name()

    trainer.callbacks.append(Window())
    trainer.fit(model, datamodule=cli.datamodule)
    per_step = {k: round(v / steps, 1) for k, v in sorted(counter.counts.items(), key=lambda kv: -kv[1])}
    if device == "cuda":
        record["ops_per_step"] = "not counted on a GPU (run without --device for the host profile)"
    else:
        record["ops_per_step"] = {"total": round(sum(counter.counts.values()) / steps, 1), **per_step}
    record["sync_ops_per_step"] = {k: round(v / steps, 1) for k, v in counter.syncs.most_common()}
    record["top_op_names_per_step"] = {k: round(v / steps, 1) for k, v in counter.names.most_common(25)}
    hooks = defaultdict(float)
    for action, durations in simple.recorded_durations.items():
        hooks[action] = sum(durations) * 1000 / steps
    record["hook_ms_per_step"] = {k: round(v, 3) for k, v in sorted(hooks.items(), key=lambda kv: -kv[1])
                                  if v >= 0.05}
    record["callbacks"] = [type(c).__name__ for c in trainer.callbacks]
    record["overrides"] = overrides
    return record


def main() -> None:
    parser = benchmark_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=list(CONFIGS), required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cpu: host-side op counts on short data; cuda: GPU kernel times at the config's sizes")
    parser.add_argument("overrides", nargs="*", help="CLI overrides, after --")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 1:
        parser.error(f"need --steps >= 1 and --warmup >= 1, got {args.steps}, {args.warmup}")
    import torch

    torch.set_num_threads(1)
    record = profile(args.config, args.steps, args.warmup, args.overrides, device=args.device)
    print(json.dumps(record, indent=1))
    write_results(args.out, name="training_step_profile", rows=[record], config=args.config, steps=args.steps,
                  warmup=args.warmup, device=args.device, child_environment=environment())


if __name__ == "__main__":
    main()
