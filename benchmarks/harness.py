"""Shared plumbing of ``benchmarks/<name>.py`` scripts (stdlib + torch only, so it runs on the GPU machine too).

Every script: ``python benchmarks/<name>.py [--quick] [--out FILE.json]`` prints a markdown table and writes JSON with
the rows and the environment. Comparisons are ratios measured side by side in the same run. While a script runs,
:class:`LiveTable` prints each row as a markdown line the moment it is measured, and :func:`stage` /
:func:`progress_lines` (from :mod:`framework.progress`) print one line per stage with its wall time on stderr.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from framework.atomic_files import write_json_atomic  # noqa: E402  (standard library only)
from framework.progress import progress_lines, stage  # noqa: E402  (standard library only)

__all__ = ["LiveTable", "benchmark_parser", "environment", "markdown_row", "markdown_table", "progress_lines", "stage", "write_results",
           "time_call"]


def benchmark_parser(description: str) -> argparse.ArgumentParser:
    """An ``argparse`` parser with the common ``--quick`` and ``--out`` options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small settings that finish fast on 2 CPU cores")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON to this file")
    return parser


def environment() -> dict[str, Any]:
    """Versions and hardware the numbers were measured on."""
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    try:
        env["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        env["git_commit"] = None
    return env


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        magnitude = abs(value)
        return f"{value:.3g}" if magnitude and (magnitude < 1e-3 or magnitude >= 1e5) else f"{value:.4g}"
    return str(value)


def _header(columns: Sequence[str]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]


def markdown_row(row: dict[str, Any], columns: Sequence[str]) -> str:
    """One row (dict) as a markdown table line; missing keys are blank."""
    return "| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |"


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows (dicts) as a GitHub markdown table; ``columns`` picks and orders the keys."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    return "\n".join([*_header(columns), *(markdown_row(row, columns) for row in rows)])


class LiveTable:
    """A markdown table printed row by row while a benchmark runs (a run cut short still shows its rows).

    The header is printed with the first row; ``columns`` defaults to that row's keys. Rows go to ``stream``
    (stdout by default) and are flushed at once.
    """

    def __init__(self, *, title: str | None = None, columns: Sequence[str] | None = None, stream=None) -> None:
        self.title = title
        self.columns = list(columns) if columns is not None else None
        self.stream = stream
        self.rows: list[dict[str, Any]] = []

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def add(self, row: dict[str, Any]) -> None:
        if not self.rows:
            self.columns = self.columns or list(row.keys())
            if self.title:
                self._print(f"\n{self.title}\n")
            for line in _header(self.columns):
                self._print(line)
        self.rows.append(row)
        self._print(markdown_row(row, self.columns))


def write_results(path: Path | None, *, name: str, rows: Sequence[dict[str, Any]], **extra: Any) -> None:
    """Write ``{"benchmark", "environment", "rows", ...extra}`` as JSON (atomically) if ``path`` is given."""
    if path is None:
        return
    payload = {"benchmark": name, "environment": environment(), "rows": list(rows), **extra}
    write_json_atomic(path, payload, indent=2, default=str, keep_nonfinite=True)


def time_call(fn: Callable[[], Any], *, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds (CPU work; GPU scripts use CUDA events or do_bench instead)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]
