"""On-disk container of a fixed-context index: a header with a sha256 checksum, then a `torch.save` payload.

Layout (all integers little-endian):

    MAGIC (8 bytes, b"SQZIDX\\x00\\x02") | payload length (8 bytes) | sha256 of the payload (32 bytes) | payload

Reading checks, in order, that the file is not empty, carries the magic (else it is some other file), is as long as
its header says (else it was truncated or appended to) and that the payload hashes to the stored digest (else bytes
were flipped), before `torch.load` sees a byte. Every failure is one `ValueError` naming the path and the problem.
Writing is atomic (`framework.atomic_files.write_atomic`: temporary file in the same folder, fsynced, renamed).
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from pathlib import Path

import torch

from framework.atomic_files import write_atomic

MAGIC = b"SQZIDX\x00\x02"
_HEADER = struct.Struct("<8sQ32s")  # magic, payload length, sha256 digest


def write_index_file(path: str | os.PathLike, state: dict) -> Path:
    """Serialise `state` (tensors, ints, floats, strings, lists, dicts) to `path` atomically with a checksum."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()
    header = _HEADER.pack(MAGIC, len(payload), hashlib.sha256(payload).digest())
    return write_atomic(path, lambda handle: (handle.write(header), handle.write(payload)))


def read_index_file(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Read and verify a file written by `write_index_file`.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: empty, foreign (no index header), truncated / over-long, checksum mismatch, or an unreadable
            payload; the message names `path`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no fixed-context index at {path}")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"{path}: the index file is empty (0 bytes); rebuild it with FixedContextIndex.build")
    if len(data) < _HEADER.size or data[: len(MAGIC)] != MAGIC:
        raise ValueError(
            f"{path}: not a fixed-context index file (it does not start with the {MAGIC!r} header; "
            "files saved before the checksummed format must be rebuilt)"
        )
    _, length, digest = _HEADER.unpack_from(data)
    payload = memoryview(data)[_HEADER.size :]
    if len(payload) != length:
        state = "truncated" if len(payload) < length else "longer than its header says"
        raise ValueError(f"{path}: the index file is {state}: payload of {len(payload)} bytes, header says {length}")
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError(f"{path}: checksum mismatch (the file was modified or corrupted after it was written)")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as err:  # a payload that hashes right but does not load was not written by us
        raise ValueError(f"{path}: the index payload cannot be read ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: the index payload is a {type(state).__name__}, expected a dict")
    return state
