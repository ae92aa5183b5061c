"""The GPU compile check (framework.kernels.gpu_compile_check) compiles interpreted launches for a real GPU target.

Each case runs in a fresh interpreter process: installing the check patches Triton for the whole process.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[3]

KERNELS = '''
import torch
import triton
import triton.language as tl

@triton.jit
def _twice(x):
    return x * 2

@triton.jit
def good_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    blocks = tl.cdiv(n, BLOCK)  # a triton.language @jit function, interpreted under TRITON_INTERPRET=1
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.store(y_ptr + offs, _twice(x) + blocks, mask=offs < n)

@triton.jit
def bad_kernel(x_ptr, BLOCK: tl.constexpr):
    # `break` in a kernel loop: the interpreter runs it as Python, the compiler has no such statement
    offs = tl.arange(0, BLOCK)
    for i in range(4):
        if i == 1:
            break
        tl.store(x_ptr + offs, tl.load(x_ptr + offs) + 1)
'''


def run_child(body: str, tmp_path: Path, arch: str = "90") -> subprocess.CompletedProcess:
    (tmp_path / "kernels_under_check.py").write_text(KERNELS)
    script = "import framework.kernels.gpu_compile_check as check\nlog = check.install_from_env()\n" + \
        "import torch\nfrom kernels_under_check import good_kernel, bad_kernel\n" + textwrap.dedent(body)
    env = dict(os.environ, TRITON_INTERPRET="1", FRAMEWORK_TRITON_COMPILE_ARCH=arch,
               PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]), TRITON_CACHE_DIR=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)


def test_valid_kernel_is_compiled_once_per_specialization_and_still_interpreted(tmp_path):
    done = run_child("""
        x = torch.arange(37, dtype=torch.float32)
        for n in (37, 37, 20):  # the same specialization twice, then n=20 (still the same: n is not 1 or 16-aligned)
            y = torch.zeros_like(x)
            good_kernel[(3,)](x, y, n, BLOCK=16)
            blocks = -(-n // 16)
            assert torch.equal(y[:n], x[:n] * 2 + blocks), y
        y16 = torch.zeros(32)
        good_kernel[(2,)](x, y16, 16, BLOCK=16)  # n = 16: divisible by 16, another specialization
        print(log.arch, sum(log.kernels.values()))
        cubins = list(__import__('pathlib').Path(__import__('os').environ['TRITON_CACHE_DIR']).rglob('*.cubin'))
        print(len(cubins))
    """, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    arch, specializations, cubins = done.stdout.split()
    assert arch == "90" and specializations == "2" and cubins == "2"


def test_code_the_interpreter_accepts_but_the_compiler_rejects_fails_at_its_launch(tmp_path):
    plain = run_child("""
        x = torch.zeros(16)
        bad_kernel[(1,)](x, BLOCK=16)
        print(x.sum().item())
    """, tmp_path, arch="")  # no check installed: the interpreter runs it
    assert plain.returncode == 0 and plain.stdout.strip() == "16.0", plain.stderr[-2000:]
    checked = run_child("""
        bad_kernel[(1,)](torch.zeros(16), BLOCK=16)
    """, tmp_path)
    assert checked.returncode != 0
    assert "unsupported AST node type: Break" in checked.stderr and "bad_kernel" in checked.stderr, checked.stderr[-3000:]


@pytest.mark.parametrize("value", ["sm90", "9.0"])
def test_bad_architecture_value_is_named(tmp_path, value):
    done = run_child("", tmp_path, arch=value)
    assert done.returncode != 0 and f"FRAMEWORK_TRITON_COMPILE_ARCH={value!r}" in done.stderr
