"""``python -m framework fit|validate|test|predict --config FILE.yaml [--key=value ...]``.

Built on ``LightningCLI`` in subclass mode: any LightningModule / LightningDataModule is chosen by ``class_path``.
Models own their optimizers (``auto_configure_optimizers=False``; factories injected as ``model.init_args.optimizer``).
Short class names (``class_path: EnsembleClassifier``) resolve through a static index: only the modules defining
the names a command uses are imported (:mod:`framework.short_names`); committed configs use full class paths.

Interpolation: ``parser_mode="omegaconf"``. ``${...}`` interpolations are resolved *inside one YAML file, before*
command-line overrides are applied: ``--model.init_args.hidden=32`` changes ``hidden`` but not a value that was
interpolated from it. Values that must stay equal across model and data are therefore linked (``link_arguments``),
not interpolated.
"""

from __future__ import annotations

import os
import sys
import warnings

# Lightning itself still calls jsonargparse APIs deprecated in 4.49; those warnings are noise for our users.
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
# Emitted by Lightning's own use of torch's pytree API on every run; not actionable for users.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import ArgsType, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from framework.base.lit_module import FrameworkModule
from framework.cli_args import CommandLineError, prepare_args
from framework.cli_errors import FrameworkArgumentParser, condense_error, report_error
from framework.loggers.config_saving import RunConfigSaver
from framework.loggers.progress_bar import StepAwareRichProgressBar
from framework.loggers.wandb_run import finish_wandb_runs
from framework.short_names import ENTRY_POINT_GROUP, PROJECT_PACKAGES, import_for_short_names, str_values

__all__ = ["FrameworkCLI", "main", "DEFAULT_SEED", "PROJECT_PACKAGES", "ENTRY_POINT_GROUP"]

DEFAULT_SEED = 1234

#: Init arguments copied from the DataModule to the model when *both* take them (``link_arguments`` on parse: the
#: model's copy disappears from the user-facing config and follows the data's). A link whose source or target the
#: chosen classes lack is skipped, so any pair of classes can be combined.
DATA_TO_MODEL_LINKS = (
    "num_classes",
    "num_features",
    "input_shape",
    "in_channels",
    "vocab_size",
    "seq_len",
    "context_length",
    "horizon",
)


class FrameworkCLI(LightningCLI):
    """The project's ``LightningCLI``: subclass mode, omegaconf parsing, fixed seed, data-to-model links,
    per-run config saving, and bad-input errors reported as one clear line before anything runs."""

    def add_arguments_to_parser(self, parser) -> None:
        for name in DATA_TO_MODEL_LINKS:
            parser.link_arguments(f"data.init_args.{name}", f"model.init_args.{name}", apply_on="parse")

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        # --ckpt_path is checked before Lightning reads its hyper-parameters (which would swap in the checkpoint's
        # model class) and before any model, data or logger exists.
        from framework.checkpoints import CheckpointError
        from framework.checkpoints.parsed_config import check_config_checkpoint

        try:
            check_config_checkpoint(self.config)
        except CheckpointError as error:
            self.parser.error(str(error))

    def before_predict(self) -> None:
        # predict saves its outputs (framework/base/prediction_writer.py) unless the config has its own writer.
        from framework.base.prediction_writer import check_predict_support, ensure_prediction_writer

        try:
            check_predict_support(self.model, self.datamodule)
        except ValueError as error:
            self.parser.error(str(error))
        ensure_prediction_writer(self.trainer)

    def instantiate_trainer(self, **kwargs):
        trainer_config = self._get(self.config_init, "trainer", default={}) or {}
        warn_if_devices_exceed_cores(trainer_config.get("accelerator"), trainer_config.get("devices"))
        # A rich progress bar on interactive terminals, unless the config disables bars or picks its own.
        if trainer_config.get("enable_progress_bar") is not False and sys.stderr.isatty() and "callbacks" not in kwargs:
            callbacks = trainer_config.get("callbacks") or []
            callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
            if not any(isinstance(c, ProgressBar) for c in callbacks):
                kwargs["callbacks"] = [*callbacks, StepAwareRichProgressBar()]
        return super().instantiate_trainer(**kwargs)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
            _dry_run_optimizer(self.model)
            _check_strategy(self.trainer, self.model)
        except (ValueError, TypeError, FileNotFoundError, KeyError, MisconfigurationException) as error:
            # Constructors validate their arguments; report the message (which names the value) without a traceback.
            self.parser.error(f"invalid configuration: {condense_error(str(error))}")


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def warn_if_devices_exceed_cores(accelerator, devices) -> bool:
    """Warn (once, on rank 0) when a CPU run asks for more processes than there are cores; returns whether it did.

    ``devices`` counts processes on CPU; more of them than cores only time-slice the same cores (and DDP on CPU
    starts one process per device).
    """
    from lightning.pytorch.utilities import rank_zero_warn

    on_cpu = accelerator == "cpu" or (accelerator in (None, "auto") and not _has_accelerator())
    if not on_cpu:
        return False
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if not isinstance(devices, int) or isinstance(devices, bool):
        return False
    cores = cpu_cores()
    if devices <= cores:
        return False
    rank_zero_warn(f"trainer.devices={devices} on CPU starts {devices} processes but this machine has {cores} CPU "
                   f"core(s): they will compete for the same cores and run slower than devices={cores}",
                   category=UserWarning)
    return True


def _has_accelerator() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps is not None and mps.is_available())


def _check_strategy(trainer, model) -> None:
    """Strategy problems a run would only hit after set-up: callbacks that cannot run under the chosen strategy, and
    FSDP without layers to wrap."""
    from framework.distributed import TransformerBlockFSDPStrategy, check_callback_strategies
    from framework.distributed.transformer_fsdp import default_wrap_policy

    check_callback_strategies(trainer.strategy, trainer.callbacks)
    strategy = trainer.strategy
    if isinstance(strategy, TransformerBlockFSDPStrategy) and not strategy._explicit_policy:
        default_wrap_policy(model)


def _dry_run_optimizer(model) -> None:
    """Build the model's optimizer (and scheduler) once, so bad settings (a negative lr, an unknown scheduler
    argument) are reported with the other configuration errors instead of deep inside ``trainer.fit``."""
    factory = getattr(model, "optimizer_factory", None)
    if not isinstance(model, FrameworkModule) or factory is None:
        return
    optimizer = factory(model.parameter_groups())
    if model.scheduler_factory is not None:
        model.scheduler_factory(optimizer)


def main(args: ArgsType = None, *, run: bool = True) -> FrameworkCLI:
    """Entry point of ``python -m framework``; ``args`` lets tests and notebooks call it with a list."""
    raw = sys.argv[1:] if args is None else args
    if isinstance(raw, (list, tuple)):
        try:
            prepared = prepare_args(raw)
        except CommandLineError as error:
            report_error(str(error), prog="python -m framework")
        if args is None and prepared != list(raw):
            # Lightning reads sys.argv itself (and DDP re-launches it for the other ranks): give it the fixed order.
            sys.argv[1:] = prepared
        import_for_short_names(prepared)
    else:  # a dict or Namespace of already-parsed options (LightningCLI accepts those too)
        prepared = raw
        import_for_short_names(str_values(raw))
    cli = FrameworkCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=DEFAULT_SEED,
        auto_configure_optimizers=False,
        save_config_callback=RunConfigSaver,
        parser_kwargs={
            "parser_mode": "omegaconf",
            "prog": "python -m framework",
            "description": "Train and evaluate the framework's research methods from YAML configs (LightningCLI).",
        },
        parser_class=FrameworkArgumentParser,
        args=None if args is None else prepared,
        run=run,
    )
    if run:
        finish_wandb_runs(cli.trainer)  # one W&B run per command, flushed to disk now
    return cli
