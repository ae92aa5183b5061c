"""framework.atomic_files: the one atomic writer (bytes, text, JSON), checked against json / numpy / torch directly."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from framework.atomic_files import jsonable, write_atomic, write_json_atomic, write_text_atomic

REPO = Path(__file__).resolve().parents[2]


def test_json_round_trip_converts_arrays_tensors_and_numpy_scalars(tmp_path):
    payload = {"array": np.arange(3.0), "tensor": torch.tensor([[1.5, 2.0]], dtype=torch.bfloat16),
               "int": np.int64(7), "float": np.float32(0.25), "flag": np.bool_(True), "tuple": (1, "a"), 3: None}
    path = write_json_atomic(tmp_path / "new" / "folder" / "out.json", payload)
    assert path == tmp_path / "new" / "folder" / "out.json"
    assert json.loads(path.read_text()) == {"array": [0.0, 1.0, 2.0], "tensor": [[1.5, 2.0]], "int": 7,
                                            "float": 0.25, "flag": True, "tuple": [1, "a"], "3": None}


def test_non_finite_floats_become_null_unless_kept(tmp_path):
    payload = {"nan": float("nan"), "inf": np.float64("inf"), "values": [1.0, -math.inf]}
    strict = write_json_atomic(tmp_path / "strict.json", payload).read_text()
    assert "NaN" not in strict and "Infinity" not in strict
    assert json.loads(strict) == {"nan": None, "inf": None, "values": [1.0, None]}
    kept = json.loads(write_json_atomic(tmp_path / "kept.json", payload, keep_nonfinite=True).read_text())
    assert math.isnan(kept["nan"]) and kept["inf"] == math.inf and kept["values"] == [1.0, -math.inf]


def test_formatting_matches_json_dumps(tmp_path):
    payload = {"rows": [{"a": 1, "b": [2.5, "x"]}], "name": "bench"}
    for indent in (None, 1, 2):
        text = write_json_atomic(tmp_path / "f.json", payload, indent=indent).read_text()
        assert text == json.dumps(payload, indent=indent)
    text = write_json_atomic(tmp_path / "f.json", payload, indent=2, trailing_newline=True).read_text()
    assert text == json.dumps(payload, indent=2) + "\n"


def test_default_serialises_unknown_objects_and_without_it_nothing_is_left_behind(tmp_path):
    target = tmp_path / "out.json"
    assert json.loads(write_json_atomic(target, {"p": Path("a/b")}, default=str).read_text()) == {"p": "a/b"}
    with pytest.raises(TypeError):
        write_json_atomic(target, {"p": object()})
    assert json.loads(target.read_text()) == {"p": "a/b"}  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary file left


def test_a_failing_writer_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = write_text_atomic(tmp_path / "index.py", "old\n")

    def half_then_fail(handle):
        handle.write(b"half a file")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["index.py"]


def test_bytes_and_text(tmp_path):
    path = write_atomic(tmp_path / "blob.bin", lambda handle: (handle.write(b"\x00\x01"), handle.write(b"\xff")))
    assert path.read_bytes() == b"\x00\x01\xff"
    assert write_text_atomic(tmp_path / "t.txt", "π ≈ 3.14\n").read_text(encoding="utf-8") == "π ≈ 3.14\n"


def test_jsonable_leaves_plain_values_alone():
    assert jsonable({"a": [1, 2.5, "s", None, True]}) == {"a": [1, 2.5, "s", None, True]}


def test_importing_it_loads_no_heavy_package():
    # GPU benchmark scripts import it in an image without lightning / jsonargparse / omegaconf / wandb / datasets.
    code = ("import sys, framework.atomic_files; print(sorted(m for m in ('numpy', 'torch', 'lightning', "
            "'jsonargparse', 'omegaconf', 'wandb', 'datasets', 'scipy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, check=True)
    assert result.stdout.strip() == "[]"


def test_a_new_file_gets_the_umask_mode_and_a_rewritten_file_keeps_its_mode(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        fresh = write_text_atomic(tmp_path / "fresh.txt", "x")
        assert fresh.stat().st_mode & 0o777 == 0o644  # as open(..., "w") would make it, not mkstemp's 0600
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        kept.chmod(0o640)
        write_text_atomic(kept, "new")
        assert kept.stat().st_mode & 0o777 == 0o640 and kept.read_text() == "new"
    finally:
        os.umask(umask)
