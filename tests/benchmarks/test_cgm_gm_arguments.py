"""``benchmarks/cgm_gm.py`` refuses a bad slot length before it generates the catalog or trains."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value", ["0", "-5"])
def test_bad_chunk_seconds_is_one_clear_error(tmp_path, value):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cgm_gm.py"), "--quick", "--chunk-dir",
                           str(tmp_path / "chunks"), f"--chunk-seconds={value}", "--cache-dir", str(tmp_path / "cache")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert f"--chunk-seconds must be > 0, got {float(value)}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "chunks").exists()  # nothing generated or written
