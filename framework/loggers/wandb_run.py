"""A ``WandbLogger`` that works without an account: offline unless the user has configured W&B."""

from __future__ import annotations

import json
import math
import netrc
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["METRICS_FILENAME", "WandbRunLogger", "finish_wandb_runs", "read_metrics", "wandb_is_configured"]

#: Every logged metric also goes, one JSON object per ``log_metrics`` call, into this file of the run's ``files/``
#: directory (beside ``config.yaml``): offline runs keep their history readable without ``wandb sync`` or network.
METRICS_FILENAME = "metrics.jsonl"


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
    """``WandbLogger`` with ``offline`` decided automatically; the metrics also go to ``files/metrics.jsonl``.

    Args:
        offline: ``None`` (default) = offline unless :func:`wandb_is_configured` or ``WANDB_MODE=online``;
            ``True``/``False`` force it. Offline runs land in ``<save_dir>/wandb/offline-run-*`` and can be uploaded
            later with ``wandb sync <save_dir>/wandb/offline-run-*``.
        save_dir: root of the W&B run directories (each run gets its own sub-directory).
        project: W&B project name.
        name, version, id, tags, group, notes, entity, job_type, log_model, prefix, checkpoint_name: as in
            ``lightning.pytorch.loggers.WandbLogger`` / ``wandb.init``.
        **kwargs: further ``wandb.init`` arguments, for Python callers. Configs get the explicit arguments above only:
            were ``**kwargs`` forwarded to ``WandbLogger`` in a way jsonargparse follows, parsing any config would
            evaluate WandbLogger's type-checking imports and so import ``wandb`` (~0.6 s) before a logger is built.
    """

    def __init__(
        self,
        *,
        offline: bool | None = None,
        save_dir: str = "outputs",
        project: str = "framework",
        name: str | None = None,
        version: str | None = None,
        id: str | None = None,  # noqa: A002 - W&B's own name for the run id
        tags: list[str] | None = None,
        group: str | None = None,
        notes: str | None = None,
        entity: str | None = None,
        job_type: str | None = None,
        log_model: bool | str = False,
        prefix: str = "",
        checkpoint_name: str | None = None,
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
        init = {key: value for key, value in {"tags": tags, "group": group, "notes": notes, "entity": entity,
                                              "job_type": job_type}.items() if value is not None}
        init.update(kwargs)
        super().__init__(offline=offline, save_dir=save_dir, project=project, name=name, version=version, id=id,
                         log_model=log_model, prefix=prefix, checkpoint_name=checkpoint_name, **init)
        self._write_metrics_file = env_mode != "disabled"

    @property
    def metrics_path(self) -> Path | None:
        """``<run dir>/files/metrics.jsonl`` once the run exists (``None`` for disabled runs)."""
        if not self._write_metrics_file or self._experiment is None or not getattr(self._experiment, "dir", None):
            return None
        return Path(self._experiment.dir) / METRICS_FILENAME

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        path = self.metrics_path
        if path is None:
            return
        record = {"step": step, "time": round(time.time(), 3), **{self._prefixed(k): _scalar(v) for k, v in
                                                                   metrics.items()}}
        # One line per call, appended and flushed: a run cut short loses at most its last line.
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, allow_nan=True) + "\n")

    def _prefixed(self, key: str) -> str:
        return f"{self._prefix}{self.LOGGER_JOIN_CHAR}{key}" if self._prefix else key

    @property
    def experiment(self):
        run = super().experiment
        if getattr(run, "id", None):
            _OPENED_RUN_IDS.add(run.id)
        return run


def _scalar(value: Any) -> Any:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return int(number) if number.is_integer() and not isinstance(value, float) and math.isfinite(number) else number


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a run directory or its ``files/`` folder may be given instead).

    A last line cut short by a killed run is skipped; any other unreadable line raises ``ValueError`` naming the file
    and line.
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / METRICS_FILENAME, path / "files" / METRICS_FILENAME]
        path = next((c for c in candidates if c.is_file()), candidates[-1])
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise ValueError(f"{path}: line {number} is not JSON ({error.msg})") from None
    return records


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
