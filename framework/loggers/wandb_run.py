"""A ``WandbLogger`` that works without an account: offline unless the user has configured W&B."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

__all__ = ["WandbRunLogger", "wandb_is_configured"]


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
        super().__init__(offline=offline, save_dir=save_dir, project=project, **kwargs)
