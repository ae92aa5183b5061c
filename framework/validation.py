"""Argument checks shared by constructors: each raises ``ValueError`` naming the argument, its value and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

__all__ = [
    "require_positive",
    "require_non_negative",
    "require_probability",
    "require_in_range",
    "require_choice",
    "require_existing_path",
]


def require_positive(name: str, value: float | int) -> None:
    """Raise unless ``value > 0`` (and finite)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def require_non_negative(name: str, value: float | int) -> None:
    """Raise unless ``value >= 0`` (and finite)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")


def require_probability(name: str, value: float) -> None:
    """Raise unless ``0 <= value <= 1``."""
    require_in_range(name, value, 0.0, 1.0)


def require_in_range(
    name: str, value: float, low: float, high: float, *, low_inclusive: bool = True, high_inclusive: bool = True
) -> None:
    """Raise unless ``value`` lies in the interval given by ``low``/``high`` and the inclusiveness flags."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if low_inclusive else value > low) and (value <= high if high_inclusive else value < high)
    if not ok:
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must lie in {left}{low}, {high}{right}, got {value!r}")


def require_choice(name: str, value: Any, choices: Collection[Any]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(map(str, choices))}, got {value!r}")


def require_existing_path(name: str, value: str | Path, *, kind: str = "any") -> Path:
    """Return ``Path(value)`` or raise ``FileNotFoundError`` naming the argument; ``kind`` is "file", "dir" or "any"."""
    path = Path(value).expanduser()
    exists = path.is_file() if kind == "file" else path.is_dir() if kind == "dir" else path.exists()
    if not exists:
        what = {"file": "an existing file", "dir": "an existing directory"}.get(kind, "an existing path")
        raise FileNotFoundError(f"{name} must be {what}, got {str(value)!r}")
    return path
