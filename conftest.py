"""Root pytest configuration: CPU only, offline, no W&B uploads, Triton in interpreter mode.

The environment variables are set here, at import time, before any test module (and so any kernel module) is
imported: ``triton.jit`` decides between compiled and interpreted kernels when a kernel is decorated.
"""

import os

os.environ["WANDB_MODE"] = "disabled"

import torch  # noqa: E402  (imports no kernel module)

if not torch.cuda.is_available():
    # Without a GPU, Triton kernels run in the interpreter (numpy on CPU tensors).
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYTHONHASHSEED", "0")
if os.environ.get("FRAMEWORK_TRITON_COMPILE_ARCH"):
    # Interpreted kernels are also compiled for this GPU architecture (ptxas, no GPU): `make gpu-compile-check`.
    from framework.kernels.gpu_compile_check import install_from_env

    install_from_env()

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def pytest_terminal_summary(terminalreporter):
    if not os.environ.get("FRAMEWORK_TRITON_COMPILE_ARCH"):
        return
    from framework.kernels.gpu_compile_check import installed

    log = installed()
    total = sum(log.kernels.values())
    terminalreporter.write_line(f"compiled for sm_{log.arch}: {total} specializations of {len(log.kernels)} kernels")
    for name, count in sorted(log.kernels.items()):
        terminalreporter.write_line(f"  {count:4d}  {name}  (shared memory up to {log.max_shared[name]:,} bytes)")
