"""Progress for long work outside a Trainer (dataset generation, benchmarks, index builds): plain lines on stderr.

Lines rather than a live bar, so logs of background jobs and CI show them too. Standard library only (benchmarks
import it on the GPU machine, which has no jsonargparse / W&B).

    with stage("generating catalog"):        # "[12:00:01] generating catalog ..." / "... done in 61.2 s"
        for item in progress_lines(items, description="records"):   # a line every ~10 % with elapsed and ETA
            ...
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TextIO, TypeVar

__all__ = ["StageClock", "progress_lines", "stage"]

T = TypeVar("T")


def _clock() -> str:
    return time.strftime("%H:%M:%S")


@contextmanager
def stage(name: str, *, stream: TextIO | None = None) -> Iterator[None]:
    """One line when ``name`` starts and one with its wall time when it ends (or fails)."""
    out = stream or sys.stderr
    print(f"[{_clock()}] {name} ...", file=out, flush=True)
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        print(f"[{_clock()}] {name} failed after {time.perf_counter() - start:.1f} s", file=out, flush=True)
        raise
    print(f"[{_clock()}] {name} done in {time.perf_counter() - start:.1f} s", file=out, flush=True)


class StageClock:
    """Lines for the consecutive phases of one job: ``mark(phase)`` prints ``<job>: <phase> done in X s`` (time since
    the previous mark), ``done()`` the job's total. For code whose phases are not one block each."""

    def __init__(self, job: str, *, stream: TextIO | None = None) -> None:
        self.job = job
        self.stream = stream
        self.start = self.last = time.perf_counter()
        print(f"[{_clock()}] {job} ...", file=self.stream or sys.stderr, flush=True)

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        print(f"[{_clock()}] {self.job}: {phase} done in {now - self.last:.1f} s", file=self.stream or sys.stderr,
              flush=True)
        self.last = now

    def done(self) -> None:
        print(f"[{_clock()}] {self.job} done in {time.perf_counter() - self.start:.1f} s",
              file=self.stream or sys.stderr, flush=True)


def progress_lines(items: Iterable[T], *, total: int, description: str, steps: int = 10,
                   stream: TextIO | None = None) -> Iterator[T]:
    """Yield ``items``, printing ``description i/total (p %), elapsed, ETA`` about ``steps`` times along the way.

    Raises:
        ValueError: ``total`` is negative or ``steps`` is not positive.
    """
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    out = stream or sys.stderr
    start = time.perf_counter()
    marks = {max(1, round(total * k / steps)) for k in range(1, steps + 1)} if total else set()
    done = 0
    for item in items:
        yield item
        done += 1
        if done in marks:
            elapsed = time.perf_counter() - start
            eta = elapsed / done * max(total - done, 0)
            print(f"[{_clock()}] {description} {done}/{total} ({100 * done / total:.0f} %), {elapsed:.1f} s elapsed, "
                  f"~{eta:.0f} s left", file=out, flush=True)
