"""A ``WandbLogger`` that works without an account: offline unless the user has configured W&B."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

__all__ = ["WandbRunLogger", "finish_wandb_runs", "wandb_is_configured"]


def wandb_is_configured() -> bool:
    """True when W&B can upload: an API key in the environment or a ``api.wandb.ai`` entry in ``~/.netrc``."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc_path.is_file():
        try:
            hosts = netrc.netrc(str(netrc_path)).hosts
        except (netrc.NetrcParseError, OSError):
            return False
        base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].rstrip("/")
        return base in hosts
    return False


class WandbRunLogger(WandbLogger):
    """``WandbLogger`` with ``offline`` decided automatically.

    Args:
        offline: ``None`` (default) = offline unless :func:`wandb_is_configured` or ``WANDB_MODE=online``;
            ``True``/``False`` force it. Offline runs land in ``<save_dir>/wandb/offline-run-*`` and can be uploaded
            later with ``wandb sync <save_dir>/wandb/offline-run-*``.
        save_dir: root of the W&B run directories (each run gets its own sub-directory).
        project: W&B project name.
        **kwargs: everything else ``lightning.pytorch.loggers.WandbLogger`` takes (name, tags, group, entity, ...).
    """

    def __init__(
        self,
        *,
        offline: bool | None = None,
        save_dir: str = "outputs",
        project: str = "framework",
        **kwargs: Any,
    ) -> None:
        env_mode = os.environ.get("WANDB_MODE", "").lower()
        if offline is None:
            offline = not (wandb_is_configured() or env_mode == "online")
        if env_mode == "disabled":
            # Respect an explicit "disabled" (tests, dry runs): WandbLogger(offline=True) would overwrite it.
            offline = False
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        _finish_previous_run()
        _reset_if_mode_changed("disabled" if env_mode == "disabled" else "offline" if offline else "online")
        super().__init__(offline=offline, save_dir=save_dir, project=project, **kwargs)

    @property
    def experiment(self):
        run = super().experiment
        if getattr(run, "id", None):
            _OPENED_RUN_IDS.add(run.id)
        return run


#: Runs opened by a WandbRunLogger in this process. A new logger finishes such a run first, so every
#: ``python -m framework`` call (or every ``main([...])`` in a notebook or test) gets a run of its own instead of
#: appending to the previous one (``WandbLogger`` reuses ``wandb.run`` when one is open).
_OPENED_RUN_IDS: set[str] = set()


#: The W&B mode this process's runs were last opened in. W&B keeps its first mode process-wide (a run opened while
#: ``WANDB_MODE=disabled`` makes every later run a no-op, even offline ones), so a change of mode tears it down.
_PROCESS_MODE: list[str] = []


def _reset_if_mode_changed(mode: str) -> None:
    import wandb

    if _PROCESS_MODE and _PROCESS_MODE[-1] != mode and wandb.run is None:
        wandb.teardown()
    _PROCESS_MODE[:] = [mode]


def _finish_previous_run() -> None:
    import wandb

    run = wandb.run
    if run is not None and getattr(run, "id", None) in _OPENED_RUN_IDS:
        run.finish()


def finish_wandb_runs(trainer) -> None:
    """Finish the W&B runs of ``trainer``'s WandbRunLoggers (flushes the summary and history to disk)."""
    for logger in getattr(trainer, "loggers", []):
        if isinstance(logger, WandbRunLogger) and logger._experiment is not None:
            if getattr(logger._experiment, "id", None) in _OPENED_RUN_IDS:
                logger._experiment.finish()
