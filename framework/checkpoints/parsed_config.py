"""The CLI's parse-time use of ``--ckpt_path``: check the file, and point a W&B logger at the run that wrote it."""

from __future__ import annotations

from typing import Any

from framework.checkpoints.inspection import CheckpointSummary, check_checkpoint, is_checkpoint_alias, resolve_class

__all__ = ["check_config_checkpoint"]


def _logger_entries(logger: Any) -> list[Any]:
    if isinstance(logger, (list, tuple)):
        return [entry for entry in logger if hasattr(entry, "get")]
    return [logger] if hasattr(logger, "get") else []


def _is_wandb_logger(class_path: str | None) -> bool:
    if not class_path:
        return False
    from lightning.pytorch.loggers import WandbLogger

    cls = resolve_class(class_path)
    return isinstance(cls, type) and issubclass(cls, WandbLogger)


def _continue_wandb_run(subconfig: Any, summary: CheckpointSummary) -> None:
    """A resumed ``fit`` logs into the checkpoint's W&B run (``WandbLogger`` opens runs with ``resume="allow"``),
    unless the config names a run (``id``/``version``) itself or uses another project."""
    trainer = subconfig.get("trainer")
    if not summary.wandb_run_id or trainer is None:
        return
    for entry in _logger_entries(trainer.get("logger")):
        init_args = entry.get("init_args")
        if init_args is None or not _is_wandb_logger(entry.get("class_path")):
            continue
        if init_args.get("id") or init_args.get("version"):
            continue
        project = init_args.get("project")
        if summary.wandb_project and project and project != summary.wandb_project:
            continue
        init_args["id"] = summary.wandb_run_id


def check_config_checkpoint(config: Any) -> CheckpointSummary | None:
    """Check the subcommand's ``ckpt_path`` against its configured model class (see
    :func:`~framework.checkpoints.inspection.check_checkpoint`); for ``fit``, continue the checkpoint's W&B run.

    Args:
        config: the parsed root namespace of ``LightningCLI`` (``config.subcommand``, ``config[subcommand]``).

    Raises:
        CheckpointError: naming the file.
    """
    subcommand = config.get("subcommand")
    if not subcommand:
        return None
    subconfig = config[subcommand]
    ckpt_path = subconfig.get("ckpt_path")
    if not ckpt_path or is_checkpoint_alias(str(ckpt_path)):
        return None
    model = subconfig.get("model")
    expected = model.get("class_path") if hasattr(model, "get") else None
    summary = check_checkpoint(str(ckpt_path), expected_model_class=expected)
    if subcommand == "fit":
        _continue_wandb_run(subconfig, summary)
    return summary
