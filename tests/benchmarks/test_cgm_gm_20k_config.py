"""Issue 22: ``configs/cgm_gm/sfba_synthetic_20k.yaml`` is the setting of the reported CGM-GM 20k run (docs/results.md,
"The full recipe: 20,000 steps on an H100 in two resumable slots").

The config is instantiated through the CLI (``framework.cli.main(..., run=False)``) and compared with
(a) the committed record ``benchmarks/results/cgm_gm_20k_s10_h100/cgm_gm_full_20k.json`` ("settings", "parameters",
and the recorded command, parsed with the script's own parser), and (b) what ``benchmarks/cgm_gm.py`` builds from
them (``make_model`` / ``make_datamodule`` / ``trainer_kwargs``, ``GRAPHED_MODULES``, ``EVAL_BATCH_SIZE``) for what
the record does not carry: model sizes and loss weights, the optimizer's every default (weight decay, fused, betas ...),
no scheduler, trainer limits, seeds (the initial weights must be bit-identical), data options.
The last test trains both paths for 3 steps on a tiny catalog (seconds) and compares the losses.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from benchmarks import cgm_gm as bench
from framework.callbacks.cuda_graph_modules import CUDAGraphModules
from framework.checkpoints import LastStateCheckpoint
from framework.models.cgm_gm import CGMGM

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "cgm_gm" / "sfba_synthetic_20k.yaml"
RECORD = ROOT / "benchmarks" / "results" / "cgm_gm_20k_s10_h100" / "cgm_gm_full_20k.json"
# Keys of the record's "settings" that describe the run (the rest is the chunk history).
SETTING_KEYS = ("num_records", "batch_size", "lr", "steps", "griffin_lim_iterations", "disc_iterations", "disc_repeats",
                "samples_per_condition")


def record() -> dict:
    return json.loads(RECORD.read_text())


def recorded_args():
    """The reported run's command line, parsed by the benchmark's own parser (defaults filled in)."""
    words = shlex.split(record()["environment"]["command"])
    script = next(i for i, w in enumerate(words) if w.endswith("cgm_gm.py"))
    return bench.build_parser().parse_args(words[script + 1:])


def recorded_cfg() -> dict:
    """The settings the script ran with: ``settings(quick)`` with the command's overrides, checked against the
    record."""
    args = recorded_args()
    cfg = bench.settings(args.quick)
    if args.steps is not None:
        cfg["steps"] = args.steps
    if args.griffin_lim_iterations is not None:
        cfg["griffin_lim_iterations"] = args.griffin_lim_iterations
    return cfg


def effective_max_epochs(trainer: pl.Trainer) -> int:
    """``max_epochs`` as the fit loop will use it (Lightning's ``_parse_loop_limits`` at fit start)."""
    if trainer.max_epochs is not None:
        return trainer.max_epochs
    return -1 if trainer.max_steps != -1 else 1000


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """The CLI objects (model, datamodule, trainer) the shipped config builds, nothing run."""
    from framework.cli import main

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("cgm_gm_20k"))
        mp.setattr(sys, "argv", ["framework"])
        mp.setenv("WANDB_MODE", "disabled")
        return main(["--config", str(CONFIG)], run=False)


def test_record_is_the_scripts_full_run():
    rec, args = record(), recorded_args()
    assert rec["benchmark"] == "cgm_gm" and rec["quick"] is False and not args.quick
    cfg = recorded_cfg()
    assert {k: rec["settings"][k] for k in SETTING_KEYS} == {k: cfg[k] for k in SETTING_KEYS}
    assert rec["settings"]["steps_taken"] == cfg["steps"] and rec["settings"]["chunk_finished"]
    # the settings the shipped config must carry (a changed script default would show up here first)
    assert (cfg["steps"], cfg["lr"], cfg["batch_size"], cfg["num_records"]) == (20000, 8e-4, 128, 5000)
    assert args.fused and args.cuda_graphs and not args.compile and args.device == "cuda"


def test_seed_and_initial_weights(cli):
    """Same seed_everything, same model sizes: the CLI's freshly built model equals the benchmark's, bit for bit."""
    args, cfg = recorded_args(), recorded_cfg()
    assert cli.config["seed_everything"] == args.seed
    pl.seed_everything(args.seed, workers=True, verbose=False)
    reference = bench.make_model(cfg, compile=args.compile, compile_mode=args.compile_mode, fused=args.fused)
    ours, theirs = cli.model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key].shape == theirs[key].shape, key
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0, equal_nan=True, msg=key)


def test_model_settings(cli):
    args, cfg = recorded_args(), recorded_cfg()
    model = cli.model
    assert type(model) is CGMGM
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == record()["parameters"]
    reference = bench.make_model(cfg, compile=args.compile, compile_mode=args.compile_mode, fused=args.fused)
    ours = {k: v for k, v in model.hparams.items() if not k.startswith("_")}
    theirs = {k: v for k, v in reference.hparams.items() if not k.startswith("_")}
    # The benchmark evaluates with its own loop: generator and post-hoc classifier seeded with --seed, its budget from
    # settings(); the model's test loop reads them from these hyper-parameters.
    theirs.update(generation_seed=args.seed, samples_per_condition=cfg["samples_per_condition"],
                  discriminative_iterations=cfg["disc_iterations"], discriminative_repeats=cfg["disc_repeats"])
    assert theirs["griffin_lim_iterations"] == cfg["griffin_lim_iterations"]
    differing = {k: (ours.get(k), theirs.get(k)) for k in ours.keys() | theirs.keys()
                 if k != "map_grid_size" and ours.get(k) != theirs.get(k)}  # the map is a figure only
    assert not differing, f"config vs benchmark (config, benchmark): {differing}"


def test_optimizer_constant_lr_no_scheduler(cli):
    args, cfg = recorded_args(), recorded_cfg()
    model = cli.model
    assert model.scheduler_factory is None, "the reported run trains at a constant learning rate (no scheduler)"
    ours = model.configure_optimizers()
    reference = bench.make_model(cfg, fused=args.fused).configure_optimizers()
    assert isinstance(reference, torch.optim.Optimizer)
    assert isinstance(ours, torch.optim.Optimizer), f"the config adds a scheduler: {ours!r}"
    assert type(ours) is type(reference) is torch.optim.Adam
    assert ours.defaults == reference.defaults
    assert ours.defaults["lr"] == cfg["lr"] == record()["settings"]["lr"]
    assert ours.defaults["fused"] is True and ours.defaults["weight_decay"] == 1e-5
    assert len(ours.param_groups) == len(reference.param_groups) == 1


def test_trainer_settings(cli):
    args, cfg = recorded_args(), recorded_cfg()
    ours = cli.trainer
    reference = pl.Trainer(**{**bench.trainer_kwargs(cfg, "cpu", args.max_train_minutes), "accelerator": "cpu"})
    assert ours.max_steps == reference.max_steps == record()["settings"]["steps"]
    # no epoch limit: Lightning turns max_epochs=None (the benchmark's) into -1 when max_steps is set
    assert effective_max_epochs(ours) == effective_max_epochs(reference) == -1
    for name in ("limit_train_batches", "limit_val_batches", "num_sanity_val_steps", "gradient_clip_val",
                 "gradient_clip_algorithm", "accumulate_grad_batches", "precision", "num_devices"):
        assert getattr(ours, name) == getattr(reference, name), name
    # no wall-clock stop of the whole run (the slots stop at epoch ends, see the config's header)
    assert not [c for c in ours.callbacks if type(c).__name__ == "Timer"]
    graphs = [c for c in ours.callbacks if isinstance(c, CUDAGraphModules)]
    if args.cuda_graphs:
        assert len(graphs) == 1, "the reported run replayed the prior's unroll as CUDA graphs"
        default = CUDAGraphModules(modules=bench.GRAPHED_MODULES)
        assert (graphs[0].modules, graphs[0].max_graphs, graphs[0].warmup_iters) == (
            default.modules, default.max_graphs, default.warmup_iters)
    else:
        assert not graphs
    # the benchmark evaluates the final weights: only last.ckpt is kept, no "best" checkpoint to test by mistake
    (checkpoint,) = [c for c in ours.callbacks if isinstance(c, LastStateCheckpoint)]
    assert checkpoint.save_top_k == 0


def test_data_settings(cli):
    args, cfg = recorded_args(), recorded_cfg()
    ours = cli.datamodule
    reference = bench.make_datamodule(cfg, cache_dir=args.cache_dir, num_workers=args.num_workers,
                                      pin_memory=args.device.startswith("cuda"))
    assert type(ours) is type(reference)
    plain = (bool, int, float, str, tuple, type(None))
    skip = {"cache_dir"}  # where the generated catalog is cached, not what it is
    a = {k: v for k, v in vars(ours).items() if isinstance(v, plain) and k not in skip and not k.startswith("_")}
    b = {k: v for k, v in vars(reference).items() if isinstance(v, plain) and k not in skip and not k.startswith("_")}
    assert a == b
    assert (ours.num_records, ours.batch_size, ours.seed) == (cfg["num_records"], cfg["batch_size"], bench.DATA_SEED)
    assert ours.condition_scaler.names == reference.condition_scaler.names
    for name in ("n_fft", "hop_length", "length", "window_name"):
        assert getattr(ours.transform, name) == getattr(reference.transform, name), name


def test_header_commands():
    """The header's test command evaluates held-out records in the benchmark's batches (the generator's draws per
    record depend on it); the sweep line exists."""
    header = [line for line in CONFIG.read_text().splitlines() if line.startswith("#")]
    text = " ".join(line.lstrip("# ").rstrip("\\ ") for line in header)
    assert "python -m framework fit --config configs/cgm_gm/sfba_synthetic_20k.yaml" in text
    test_command = text[text.index("python -m framework test"):]
    assert f"--data.init_args.batch_size={bench.EVAL_BATCH_SIZE}" in test_command.split(" # ")[0]
    assert "--ckpt_path" in text and "--trainer.max_time" in text and "RNGStateCheckpoint" in text
    assert any(line.startswith("# sweep-args:") for line in header)


def test_cli_and_benchmark_train_the_same_first_steps(tmp_path, monkeypatch):
    """Three steps on a 60-record catalog, batch 8: the CLI with this config and the benchmark's ``train()`` take
    the same losses (same model, weights, data order and noise stream)."""
    from framework.cli import main

    args = recorded_args()
    losses: list[float] = []
    original = CGMGM.training_step

    def recording(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        losses.append(float(loss.detach()))
        return loss

    monkeypatch.setattr(CGMGM, "training_step", recording)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tiny = {"num_records": 60, "batch_size": 8, "steps": 3, "griffin_lim_iterations": 2}
    threads = torch.get_num_threads()
    try:
        cfg = {**recorded_cfg(), **tiny}
        data = bench.make_datamodule(cfg)
        data.prepare_data()
        data.setup("fit")
        bench.train(data, cfg, args.seed, "cpu", fused=args.fused, cuda_graphs=args.cuda_graphs)
        benchmark_losses, losses[:] = list(losses), []
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "argv", ["framework"])
        main(["fit", "--config", str(CONFIG), "--trainer.accelerator=cpu", "--trainer.logger=false",
              "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
              f"--trainer.max_steps={tiny['steps']}", f"--data.init_args.num_records={tiny['num_records']}",
              f"--data.init_args.batch_size={tiny['batch_size']}", "--data.init_args.num_workers=0",
              "--data.init_args.pin_memory=false"])
    finally:
        torch.set_num_threads(threads)
    assert len(benchmark_losses) == tiny["steps"] and all(math.isfinite(v) for v in benchmark_losses)
    assert losses == benchmark_losses
