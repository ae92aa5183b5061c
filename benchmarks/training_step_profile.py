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


def profile(config: str, steps: int, warmup: int, overrides: list[str]) -> dict:
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.profilers import SimpleProfiler

    from framework.cli import main

    workdir = Path(tempfile.mkdtemp(prefix=f"step-profile-{config}-"))
    args = ["--config", str(REPO / CONFIGS[config]), *SMALL_DATA[config], *overrides,
            f"--trainer.max_steps={warmup + steps}", "--trainer.limit_val_batches=0", "--trainer.max_epochs=-1",
            f"--trainer.default_root_dir={workdir}", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.init_args.save_dir={workdir}", "--trainer.accelerator=cpu"]
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
                self.torch_profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                             record_shapes=False)
                self.torch_profiler.__enter__()
                counter.mode.__enter__()
                self.t0 = time.perf_counter()
            counter.active = trainer.global_step >= warmup

        def on_train_end(self, trainer, pl_module) -> None:
            record["ms_per_step"] = round(1000 * (time.perf_counter() - self.t0) / steps, 2)
            counter.active = False
            counter.mode.__exit__(None, None, None)
            self.torch_profiler.__exit__(None, None, None)
            events = self.torch_profiler.key_averages()
            top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:20]
            record["top_ops_self_cpu_ms_per_step"] = {e.key: round(e.self_cpu_time_total / 1000 / steps, 3)
                                                      for e in top}

    trainer.callbacks.append(Window())
    trainer.fit(model, datamodule=cli.datamodule)
    per_step = {k: round(v / steps, 1) for k, v in sorted(counter.counts.items(), key=lambda kv: -kv[1])}
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
    parser.add_argument("overrides", nargs="*", help="CLI overrides, after --")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 1:
        parser.error(f"need --steps >= 1 and --warmup >= 1, got {args.steps}, {args.warmup}")
    import torch

    torch.set_num_threads(1)
    record = profile(args.config, args.steps, args.warmup, args.overrides)
    print(json.dumps(record, indent=1))
    write_results(args.out, name="training_step_profile", rows=[record], config=args.config, steps=args.steps,
                  warmup=args.warmup, child_environment=environment())


if __name__ == "__main__":
    main()
