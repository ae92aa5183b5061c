"""``benchmarks/chunked_fit.py`` (the slot-by-slot driver the GPU runs use) and ``benchmarks/training_throughput.py``
on the configs' tiny sweep sizes: the archive round trip and the chunk record, not speed."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tarfile

import pytest

from benchmarks.chunked_fit import pack_state, restore_state


def test_archive_round_trip_in_pieces(tmp_path):
    state = tmp_path / "state"
    (state / "run" / "logs").mkdir(parents=True)
    (state / "run" / "chunk.ckpt").write_bytes(bytes(range(256)) * 40)
    (state / "run" / "logs" / "metrics.csv").write_text("step,loss\n1,2.0\n")
    (state / "run" / "last.ckpt").write_bytes(b"x" * 100)  # left out: chunk.ckpt supersedes it
    out = tmp_path / "out"
    pieces = pack_state(state, "run", out, piece_mib=4096 / 2**20)
    assert len(pieces) > 1 and all(p.stat().st_size <= 4096 for p in pieces)
    carried = tmp_path / "carried"
    carried.mkdir()
    for piece in pieces:
        (carried / piece.name).write_bytes(piece.read_bytes())
    restore_state(carried, "run")
    assert (carried / "run" / "chunk.ckpt").read_bytes() == (state / "run" / "chunk.ckpt").read_bytes()
    assert (carried / "run" / "logs" / "metrics.csv").read_text() == "step,loss\n1,2.0\n"
    assert not (carried / "run" / "last.ckpt").exists()


@pytest.mark.slow
def test_two_slots_continue_one_run(tmp_path, repo_root):
    config = repo_root / "configs/ssm/listops_s4d.yaml"
    sweep = next(line for line in config.read_text().splitlines() if line.startswith("# sweep-args:"))
    overrides = [*shlex.split(sweep.removeprefix("# sweep-args:")), "--data.init_args.batch_size=4",
                 "--trainer.max_steps=8", "--trainer.val_check_interval=4", "--trainer.enable_progress_bar=false",
                 "--model.init_args.scheduler.init_args.total_steps=8",
                 "--model.init_args.scheduler.init_args.warmup_steps=2"]
    state, out = tmp_path / "state", tmp_path / "out"

    def slot(seconds: float) -> dict:
        command = [sys.executable, str(repo_root / "benchmarks/chunked_fit.py"), "--run", "tiny", "--config",
                   str(config), "--seconds", str(seconds), "--state-dir", str(state), "--out", str(out),
                   "--test-after", "--", *overrides]
        subprocess.run(command, cwd=repo_root, check=True, capture_output=True, text=True)
        with tarfile.open(out / "tiny.tar") as tar:
            tar.extractall(tmp_path / "back", filter="data")
        return json.loads((tmp_path / "back" / "tiny" / "chunk.json").read_text())[-1]

    first = slot(1e-6)  # stops after the first epoch (4 steps)
    assert first["steps_before"] is None and first["steps_after"] == 4 and not first["finished"]
    # The next slot starts from the carried archive only (the unpacked folder stays behind on the old machine).
    import shutil

    shutil.rmtree(state / "tiny")
    (state / "tiny.tar").write_bytes((out / "tiny.tar").read_bytes())
    second = slot(1e6)
    assert second["steps_before"] == 4 and second["steps_after"] == 8 and second["finished"]
    assert second["test_exit_code"] == 0
    logs = tmp_path / "back" / "tiny" / "logs" / "version_0"
    assert "val/accuracy" in (logs / "metrics_00_fit.csv").read_text()
    assert "val/accuracy" in (logs / "metrics_01_fit.csv").read_text()
    assert "test/accuracy" in (logs / "metrics_01_test.csv").read_text()
