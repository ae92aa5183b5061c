"""Cheap checks of the user's data files, run when a DataModule is constructed (before any logger opens a run).

Each check reads at most a file's first bytes or lines, so it costs milliseconds even for multi-GB files; the full
read happens later, in ``prepare_data`` / ``setup``. Errors name the argument, the file and what is expected:
``FileNotFoundError`` for a missing file, ``ValueError`` for everything else.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Collection
from pathlib import Path

from framework.validation import require_existing_path

__all__ = ["HDF5_SIGNATURE", "check_hdf5_file", "check_images", "read_csv_header", "require_data_file"]

#: First 8 bytes of every HDF5 file (at offset 0, or 512, 1024, ... when the file has a user block).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def require_data_file(name: str, path: str | Path) -> Path:
    """``Path(path)`` of an existing, readable, non-empty file, or an error naming ``name`` and the file."""
    file = require_existing_path(name, path, kind="file")
    if not os.access(file, os.R_OK):
        raise ValueError(f"{name}={str(path)!r} is not readable (permission denied)")
    if file.stat().st_size == 0:
        raise ValueError(f"{name}={str(path)!r} is empty (0 bytes)")
    return file


def read_csv_header(name: str, path: str | Path, *, required: Collection[str] = (), min_rows: int = 1) -> list[str]:
    """Column names of a CSV file, after checking it has the ``required`` columns and ``min_rows`` data rows.

    Returns:
        The header's column names.
    """
    file = require_data_file(name, path)
    try:
        with file.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            rows = sum(1 for _, row in zip(range(min_rows), reader) if any(cell.strip() for cell in row))
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{name}={str(path)!r} is not a readable CSV text file ({error})") from None
    header = [cell.strip() for cell in header]
    if not any(header):
        raise ValueError(f"{name}={str(path)!r} has no header row (the first line is empty)")
    missing = [column for column in required if column not in header]
    if missing:
        raise ValueError(f"{name}={str(path)!r} lacks the columns {missing}; it has {header[:12]}"
                         f"{' ...' if len(header) > 12 else ''}")
    if rows < min_rows:
        raise ValueError(f"{name}={str(path)!r} has a header but {rows} data row(s); need at least {min_rows}")
    return header


def check_hdf5_file(name: str, path: str | Path) -> Path:
    """``Path(path)`` of a non-empty file that starts with the HDF5 signature (no h5py needed)."""
    file = require_data_file(name, path)
    size = file.stat().st_size
    with file.open("rb") as handle:
        offset = 0
        while offset + len(HDF5_SIGNATURE) <= size:
            handle.seek(offset)
            if handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return file
            offset = 512 if offset == 0 else offset * 2
    raise ValueError(f"{name}={str(path)!r} is not an HDF5 file (no HDF5 signature; {size} bytes): truncated, "
                     "garbled or another format")


def check_images(name: str, files: list[Path]) -> None:
    """Every file is non-empty and Pillow identifies it as an image (its header only; the pixels are read later)."""
    from PIL import Image, UnidentifiedImageError

    for file in files:
        require_data_file(f"{name} image", file)
        try:
            with Image.open(file) as image:
                image.size  # noqa: B018 - parsing the header is the check
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ValueError(f"{name}: {str(file)!r} is not a readable image ({error})") from None
