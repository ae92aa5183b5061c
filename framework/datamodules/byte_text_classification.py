"""Byte-level text classification (the LRA "Text" task's format) on any folder of text files the user supplies.

Layout: ``text_folder/<class name>/**/*.txt`` (one sub-directory per class; any file suffix in ``suffixes``). Each
document becomes its UTF-8 bytes, truncated to ``seq_len`` (LRA IMDb: 4096), as token ids ``byte + 1`` (0 = padding;
vocabulary 257). Splits are stratified and seeded; the tokenised corpus is cached with 🤗 datasets (fingerprinted by
the folder's file list, sizes and modification times).

Batches: ``(tokens [B, L] int64, label [B] int64, lengths [B] int64)``, padded to the batch's longest document.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from framework.datamodules.listops import pad_collate
from framework.base import SplitDataModule
from framework.validation import require_existing_path, require_in_range

__all__ = ["ByteTextClassification", "generate_byte_text", "BYTE_VOCAB_SIZE"]

BYTE_VOCAB_SIZE = 257
_REPO_ROOT = Path(__file__).resolve().parents[2]


def _class_files(folder: Path, suffixes: tuple[str, ...]) -> list[tuple[str, Path]]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [(c, f) for c in classes for f in sorted((folder / c).rglob("*"))
            if f.is_file() and f.suffix.lower() in suffixes]


def _signature(files: list[tuple[str, Path]], folder: Path) -> str:
    digest = hashlib.sha256()
    for c, f in files:
        stat = f.stat()
        digest.update(f"{c}/{f.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def generate_byte_text(*, folder: str, signature: str, suffixes: list[str], seq_len: int, val_fraction: float,
                       test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Columns ``tokens [N, seq_len] uint16`` (byte + 1, 0-padded), ``length [N]``, ``label [N]``, ``split [N]``."""
    root = Path(folder)
    files = _class_files(root, tuple(suffixes))
    classes = sorted({c for c, _ in files})
    tokens = np.zeros((len(files), seq_len), dtype=np.uint16)
    lengths = np.zeros(len(files), dtype=np.int64)
    labels = np.array([classes.index(c) for c, _ in files], dtype=np.int64)
    for i, (_, path) in enumerate(files):
        data = np.frombuffer(path.read_bytes()[:seq_len], dtype=np.uint8)
        tokens[i, : len(data)] = data.astype(np.uint16) + 1
        lengths[i] = len(data)
    rng = np.random.default_rng(seed)
    split = np.zeros(len(files), dtype=np.int64)
    for label in range(len(classes)):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val, n_test = round(val_fraction * len(members)), round(test_fraction * len(members))
        split[members[:n_val]] = 1
        split[members[n_val: n_val + n_test]] = 2
    return {"tokens": tokens, "length": np.maximum(lengths, 1), "label": labels, "split": split}


class _Rows(Dataset):
    def __init__(self, tokens: np.ndarray, lengths: np.ndarray, labels: np.ndarray) -> None:
        self.tokens, self.lengths, self.labels = tokens, lengths, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.tokens[index], int(self.lengths[index]), int(self.labels[index])


class ByteTextClassification(SplitDataModule):
    """Byte-level document classification from a user folder.

    Args:
        text_folder: directory with one sub-directory per class (a relative path missing from the working directory
            is looked up in the framework checkout, so the shipped example runs from anywhere).
        num_classes: number of classes (checked against the folder); linked to the model.
        vocab_size: 257 (bytes + padding); linked to the model.
        seq_len: documents are truncated to this many bytes; linked to the model.
        suffixes: file suffixes read as documents.
        val_fraction, test_fraction: stratified split fractions.
        batch_size, num_workers, seed, cache_dir, pin_memory: see ``FrameworkDataModule``.
    """

    def __init__(self, *, text_folder: str, num_classes: int = 2, vocab_size: int = BYTE_VOCAB_SIZE,
                 seq_len: int = 4096, suffixes: list[str] = (".txt",), val_fraction: float = 0.1,
                 test_fraction: float = 0.2, batch_size: int = 32, num_workers: int = 0, seed: int = 0,
                 cache_dir: str | None = None, pin_memory: bool = False) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, cache_dir=cache_dir,
                         pin_memory=pin_memory)
        candidate = Path(text_folder).expanduser()
        if not candidate.is_absolute() and not candidate.is_dir() and (_REPO_ROOT / candidate).is_dir():
            candidate = _REPO_ROOT / candidate  # shipped examples (configs/ssm/example_text) run from any directory
        self.text_folder = str(require_existing_path("text_folder", candidate, kind="dir").resolve())
        if vocab_size != BYTE_VOCAB_SIZE:
            raise ValueError(f"byte tokens need vocab_size={BYTE_VOCAB_SIZE} (256 bytes + padding), got {vocab_size!r}")
        if not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
        require_in_range("val_fraction", val_fraction, 0.0, 1.0, high_inclusive=False)
        require_in_range("test_fraction", test_fraction, 0.0, 1.0, high_inclusive=False)
        if val_fraction + test_fraction >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
        self.suffixes = tuple(s.lower() if s.startswith(".") else f".{s.lower()}" for s in suffixes)
        files = _class_files(Path(self.text_folder), self.suffixes)
        classes = sorted({c for c, _ in files})
        if len(classes) < 2:
            raise ValueError(f"text_folder {self.text_folder!r} must hold >= 2 class sub-directories with "
                             f"{list(self.suffixes)} files, found classes {classes}")
        if num_classes != len(classes):
            raise ValueError(f"num_classes={num_classes!r} but {self.text_folder!r} has {len(classes)} classes: {classes}")
        self.classes = classes
        self.num_classes, self.vocab_size, self.seq_len = num_classes, vocab_size, seq_len
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.datasets: dict[str, _Rows] = {}

    def _load(self):
        folder = Path(self.text_folder)
        return self.cached("byte-text", generate_byte_text, version=1, folder=str(folder),
                           signature=_signature(_class_files(folder, self.suffixes), folder),
                           suffixes=list(self.suffixes), seq_len=self.seq_len, val_fraction=self.val_fraction,
                           test_fraction=self.test_fraction, seed=self.seed)

    def prepare_data(self) -> None:
        self._load()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        data = self._load()[:]
        tokens, lengths, labels, split = (np.asarray(data[k]) for k in ("tokens", "length", "label", "split"))
        for name, code in (("train", 0), ("val", 1), ("test", 2)):
            mask = split == code
            self.datasets[name] = _Rows(tokens[mask], lengths[mask], labels[mask])

    def collate(self, split: str):
        return pad_collate(None)
