"""The shell helpers of the one-call GPU scripts (benchmarks/gpu_call.sh): staged runs and a bounded file count."""

import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["squeezed_issue23_gpu.sh", "training_issue24_gpu.sh"]


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
