"""``benchmarks/needle_design_sweep.py`` refuses bad --design values before loading any model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/needle_design_sweep.py", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_unknown_option_is_one_clear_error():
    out = _run("--design", "x", '{"single": 3, "needle_colour": "red"}')
    assert out.returncode != 0 and "--design x: unknown options ['needle_colour']" in out.stderr
    assert "Traceback" not in out.stderr


def test_not_json_is_one_clear_error():
    out = _run("--design", "x", "{single: 3}")
    assert out.returncode != 0 and "--design x: not a JSON object" in out.stderr
    assert "Traceback" not in out.stderr
