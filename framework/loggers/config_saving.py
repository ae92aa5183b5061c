"""Save the resolved config of every run into that run's own directory (and into the W&B run's config).

Lightning's default ``SaveConfigCallback`` writes ``<trainer.log_dir>/config.yaml``; with a W&B logger that directory is
shared by all runs, so a second run of the same config aborts (Lightning issues #11256, #17168). This callback writes
into the W&B run directory (synced with the run) or the logger's per-version directory instead, and never overwrites
an existing file. Without any logger the file goes to ``<output root>/run_configs/config-<time>.yaml``, where the
output root is ``trainer.default_root_dir`` when set and ``outputs/`` otherwise (never the working directory).
"""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from framework.atomic_files import write_text_atomic
from framework.base.output_root import output_root

__all__ = ["RunConfigSaver", "free_path"]


def free_path(directory: Path, filename: str) -> Path:
    """``directory/filename`` if free, else ``directory/<stem>-<n><suffix>`` with the smallest free ``n``."""
    path = directory / filename
    n = 1
    while path.exists():
        path = directory / f"{Path(filename).stem}-{n}{Path(filename).suffix}"
        n += 1
    return path


class RunConfigSaver(SaveConfigCallback):
    """Writes ``config.yaml`` into each run's own directory; the YAML also goes into the W&B run config."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer, pl_module, stage: str) -> None:  # rank 0 only (Lightning guarantees it)
        text = self.parser.dump(self.config, skip_none=False)
        directories: list[Path] = []
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                experiment = logger.experiment
                run_dir = getattr(experiment, "dir", None)
                if run_dir:
                    directories.append(Path(run_dir))
                try:
                    import yaml

                    experiment.config.update({"cli_config": yaml.safe_load(text)}, allow_val_change=True)
                except Exception:  # a disabled run has a no-op config; nothing to record there
                    pass
            elif getattr(logger, "log_dir", None):
                directories.append(Path(logger.log_dir))
        filename = self.config_filename
        if not directories:
            # No logger, so no run directory: a timestamped copy under the output root (never the working directory).
            directories.append(output_root(trainer) / "run_configs")
            filename = f"{Path(filename).stem}-{time.strftime('%Y%m%d-%H%M%S')}{Path(filename).suffix}"
        for directory in directories:
            directory.mkdir(parents=True, exist_ok=True)
            target = free_path(directory, filename)
            write_text_atomic(target, text)
