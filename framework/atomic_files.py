"""Write files atomically: a temporary file in the target directory, fsynced, then renamed into place.

A reader (or a run cut short) sees the old file or the new one, never half of one. The one implementation in the
project: :func:`write_atomic` (bytes through a callback), :func:`write_text_atomic`, :func:`write_json_atomic`
(after :func:`jsonable`). Standard library only (numpy and torch values are converted when those are already
imported), so GPU benchmark scripts can import it without the training stack.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["write_atomic", "write_text_atomic", "jsonable", "write_json_atomic"]


def _umask() -> int:
    try:  # Linux: read it, rather than set and restore it (which would race with other threads creating files)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass  # no /proc (not Linux) or an unexpected format: fall through to the portable set-and-restore below
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _file_mode(path: Path) -> int:
    """The old file's permission bits, or those ``open(path, "w")`` would give a new one."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on a binary handle to a temporary file next to ``path``, fsync it, rename it to
    ``path`` (creating the parent folders); the temporary file is removed if anything fails. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode(path))  # mkstemp makes 0600; give the mode a plain open() would (or the old file's)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (:func:`write_atomic`); returns the path."""
    data = text.encode(encoding)
    return write_atomic(path, lambda handle: handle.write(data))


def jsonable(value: Any, *, keep_nonfinite: bool = False) -> Any:
    """Convert tensors, arrays and numpy scalars into plain JSON values (dict keys become strings).

    Non-finite floats become ``None`` (valid JSON), or stay as they are with ``keep_nonfinite=True`` (Python's
    ``json`` then writes ``NaN`` / ``Infinity``, as benchmark files always have).
    """
    # A value can only be a tensor or a numpy object if its module is already imported: never import them here.
    torch = sys.modules.get("torch")
    np = sys.modules.get("numpy")
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    if np is not None:
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.integer):
            return int(value)
        elif isinstance(value, np.bool_):
            return bool(value)
        elif isinstance(value, np.floating):
            value = float(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v, keep_nonfinite=keep_nonfinite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, keep_nonfinite=keep_nonfinite) for v in value]
    if isinstance(value, float):
        value = float(value)
        return value if keep_nonfinite or math.isfinite(value) else None
    return value


def write_json_atomic(path: str | os.PathLike, payload: Any, *, indent: int | None = None,
                      default: Callable[[Any], Any] | None = None, keep_nonfinite: bool = False,
                      trailing_newline: bool = False) -> Path:
    """Write ``payload`` (made JSON-safe by :func:`jsonable`) to ``path`` atomically; returns the path.

    Args:
        indent: ``json.dumps`` indentation (``None``: one line).
        default: ``json.dumps``'s fallback for objects it cannot serialise (e.g. ``str``); ``None`` raises.
        keep_nonfinite: see :func:`jsonable`.
        trailing_newline: end the file with ``"\\n"``.
    """
    text = json.dumps(jsonable(payload, keep_nonfinite=keep_nonfinite), indent=indent, default=default)
    return write_text_atomic(path, text + "\n" if trailing_newline else text)
