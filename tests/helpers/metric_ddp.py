"""Run a torchmetrics metric in a 2-process CPU DDP group (gloo) and compare it with one process over all the data.

Usage in a test::

    from tests.helpers.metric_ddp import assert_ddp_matches_single_process
    assert_ddp_matches_single_process(functools.partial(MyMetric, k=3), batches)

``batches`` is a list of tuples of tensors passed to ``metric.update(*batch)``; rank r gets ``batches[r::2]``.
The factory must be picklable (a class, or ``functools.partial`` of one).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["assert_ddp_matches_single_process", "free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, factory: Callable, batches: Sequence, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        metric = factory()
        for batch in batches[rank::world_size]:
            metric.update(*batch)
        value = metric.compute()
        torch.save(value, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _as_tensors(value):
    if isinstance(value, dict):
        return {k: _as_tensors(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_as_tensors(v) for v in value)
    return torch.as_tensor(value)


def _assert_close(actual, expected, atol: float, rtol: float, where: str = "") -> None:
    if isinstance(expected, dict):
        assert set(actual) == set(expected), f"{where}: keys {set(actual)} != {set(expected)}"
        for key in expected:
            _assert_close(actual[key], expected[key], atol, rtol, f"{where}.{key}")
    elif isinstance(expected, (tuple, list)):
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_close(a, e, atol, rtol, f"{where}[{i}]")
    else:
        torch.testing.assert_close(
            torch.as_tensor(actual).double(), torch.as_tensor(expected).double(), atol=atol, rtol=rtol,
            equal_nan=True, msg=lambda m: f"DDP result differs from single process at {where or 'value'}: {m}",
        )


def assert_ddp_matches_single_process(
    factory: Callable, batches: Sequence[tuple], *, world_size: int = 2, atol: float = 1e-6, rtol: float = 1e-6
) -> None:
    """Every rank's synced ``compute()`` equals the single-process ``compute()`` over all batches."""
    single = factory()
    for batch in batches:
        single.update(*batch)
    expected = _as_tensors(single.compute())
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(world_size, free_port(), factory, list(batches), out_dir), nprocs=world_size, join=True)
        for rank in range(world_size):
            actual = torch.load(Path(out_dir) / f"rank{rank}.pt", weights_only=False)
            _assert_close(_as_tensors(actual), expected, atol, rtol, f"rank{rank}")
