"""benchmarks/training_step_profile.py: the ranking of its tables, the host profile end to end, the GPU mode's refusal
on a machine without CUDA."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.training_step_profile import top_kernels  # noqa: E402


def test_top_kernels_ranks_by_self_time_and_sums_every_timed_event():
    from torch.autograd import DeviceType

    cuda, cpu_side = DeviceType.CUDA, DeviceType.CPU
    events = [SimpleNamespace(key=k, self_cpu_time_total=c, self_device_time_total=g, device_type=t)
              for k, c, g, t in [("a", 4000.0, 0.0, cpu_side), ("b", 1000.0, 9000.0, cuda), ("c", 0.0, 3000.0, cuda),
                                 ("d", 2000.0, 6000.0, cuda),
                                 ("aten::op_that_launched_b", 500.0, 9000.0, cpu_side)]]  # b's time again
    gpu, busy = top_kernels(events, 2, device="cuda", limit=2)
    assert list(gpu) == ["b", "d"] and gpu == {"b": 4.5, "d": 3.0}
    assert busy == 9.0  # (9 + 3 + 6) ms of kernels over 2 steps, beyond the limit included, the op's copy not
    cpu, total = top_kernels(events, 2, device="cpu")
    assert list(cpu) == ["a", "d", "b", "aten::op_that_launched_b"] and total == 3.75  # "c": no CPU time


def test_host_profile_of_the_listops_config_counts_ops_per_part(tmp_path):
    out = tmp_path / "p.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/training_step_profile.py"), "--config", "listops",
                           "--steps", "2", "--warmup", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    row = json.loads(out.read_text())["rows"][0]
    parts = row["ops_per_step"]
    assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"), abs=1.0)
    assert parts["backbone.blocks.*.ssm"] > 0 and parts["backward"] > 0 and parts["optimizer"] > 0
    assert "top_kernels_gpu_ms_per_step" not in row and row["ms_per_step"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_mode_without_cuda_is_one_clear_error(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/training_step_profile.py"), "--config", "listops",
                           "--device", "cuda", "--out", str(tmp_path / "p.json")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode != 0 and "--device cuda: no CUDA device is visible to torch" in done.stderr
    assert "Traceback" not in done.stderr
