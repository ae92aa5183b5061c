"""Logging helpers: the offline-first W&B logger, per-run config saving and figure logging."""

from framework.loggers.config_saving import RunConfigSaver
from framework.loggers.figures import figure_to_array, log_figure, new_figure
from framework.loggers.wandb_run import WandbRunLogger, finish_wandb_runs, read_metrics, wandb_is_configured

__all__ = ["RunConfigSaver", "WandbRunLogger", "finish_wandb_runs", "figure_to_array", "log_figure", "new_figure", "read_metrics",
           "wandb_is_configured"]
