"""The shell helpers of the one-call GPU scripts (benchmarks/gpu_call.sh): staged runs and a bounded file count."""

import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["squeezed_issue23_gpu.sh", "training_issue24_gpu.sh", "cgm_gm_20k_gpu.sh", "listops_chunks_gpu.sh",
           "flow_matching_throughput_gpu.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)], check=True)


def test_stages_run_skip_and_logs_pack_into_one_file(tmp_path):
    out = tmp_path / "out"
    body = (f'OUT={out} STAGES="first third"; source {ROOT / "benchmarks" / "gpu_call.sh"}; '
            'stage 10 first echo hello; stage 10 second echo never; stage 1 third sleep 5; '
            'echo "# table" > "$OUT/render.md"; echo "{}" > "$OUT/keep.json"; pack_logs')
    subprocess.run(["bash", "-c", body], check=True, capture_output=True)
    lines = (out / "stages.txt").read_text().splitlines()
    assert lines[0].startswith("first: rc=0") and lines[1] == "second: skipped (STAGES)"
    assert lines[2].startswith("third: rc=124")  # the stage's own time limit stopped it
    assert sorted(p.name for p in out.iterdir()) == ["keep.json", "logs.tgz", "stages.txt"]
    with tarfile.open(out / "logs.tgz") as tar:
        names = sorted(Path(n).name for n in tar.getnames())
        assert names == ["first.log", "render.md", "third.log"]
        assert tar.extractfile("./first.log").read() == b"hello\n"


def test_logs_pack_without_any_markdown_file(tmp_path):
    """Session 10's CGM-GM calls wrote only .log files, and the packing silently did nothing."""
    out = tmp_path / "out"
    body = (f'OUT={out} STAGES="only"; source {ROOT / "benchmarks" / "gpu_call.sh"}; '
            'stage 10 only echo hi; echo "{}" > "$OUT/keep.json"; pack_logs; pack_logs')  # twice: nothing left is fine
    subprocess.run(["bash", "-c", body], check=True, capture_output=True)
    assert sorted(p.name for p in out.iterdir()) == ["keep.json", "logs.tgz", "stages.txt"]
    with tarfile.open(out / "logs.tgz") as tar:
        assert sorted(Path(n).name for n in tar.getnames()) == ["only.log"]


def test_wheels_go_on_the_path_and_a_failed_install_stops_the_call(tmp_path):
    out = tmp_path / "out"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/sh\necho "$@" > "$OUT/pip_args"; exit ${PIP_RC:-0}\n')
    (fake / "python").chmod(0o755)
    script = (f'export PATH={fake}:$PATH OUT={out} STAGES=""; source {ROOT / "benchmarks" / "gpu_call.sh"}; '
              'PYTHONPATH=/repo; install_wheels; echo "path=$PYTHONPATH"')
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and "path=/tmp/site:/repo" in done.stdout
    assert "--target /tmp/site" in (out / "pip_args").read_text()
    failed = subprocess.run(["bash", "-c", "export PIP_RC=1; " + script], capture_output=True, text=True,
                            cwd=tmp_path)
    assert failed.returncode == 1 and "wheels failed" in failed.stdout and "path=" not in failed.stdout
