"""Where a command writes files that have no logger directory to go to."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_OUTPUT_ROOT", "output_root"]

#: Relative to the working directory, like the loggers' ``save_dir: outputs`` of the shipped configs.
DEFAULT_OUTPUT_ROOT = Path("outputs")


def output_root(trainer) -> Path:
    """``trainer.default_root_dir`` when the user set it, else ``outputs/``: never the working directory itself
    (Lightning's default root *is* the working directory)."""
    root = Path(trainer.default_root_dir)
    try:
        is_cwd = root.resolve() == Path(os.getcwd()).resolve()
    except OSError:
        is_cwd = False
    return DEFAULT_OUTPUT_ROOT if is_cwd else root
