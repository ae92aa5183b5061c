"""Long-Range-Arena ListOps, generated offline exactly as the original LRA generator does, cached with 🤗 datasets.

Generator (our implementation of the procedure in ``google-research/long-range-arena: lra_benchmarks/data/listops.py``):
a node at depth d < ``max_depth`` is an operator with probability 0.25 and a digit 0-9 otherwise (always a digit at
``max_depth``); an operator draws its number of arguments uniformly from 2..``max_args`` and one of MIN, MAX, MED
(``int(median)``) and SM (sum mod 10). A tree's length counts operators, digits and closing brackets; trees are drawn
from depth 1 and kept when ``min_length < length < max_length`` (strict, as in LRA), duplicates dropped, until
train + val + test distinct trees exist, which are split in generation order. Two speed-ups that leave the
distribution of kept trees unchanged: a tree stops growing (and is rejected) as soon as it reaches ``max_length``,
and independently seeded chunks of trees are generated in parallel processes. LRA defaults: 96k / 2k / 2k, depth 10,
10 arguments, lengths 500-2000; the answer (0-9) is the label.

Tokens (parentheses dropped, as the S4 code does): 0 = padding, 1-10 = digits 0-9, 11-14 = [MIN [MAX [MED [SM,
15 = ]. Batches: ``(tokens [B, L] int64, label [B] int64, lengths [B] int64)``, padded to the longest sequence in
the batch (``pad_to_seq_len`` pads to ``seq_len``, ``length_buckets`` to the smallest bucket that fits).
"""

from __future__ import annotations

import multiprocessing
import os
import random

import numpy as np
import torch
from torch.utils.data import Dataset

from framework.base import SplitDataModule

__all__ = ["ListOps", "generate_listops", "listops_value", "OPERATORS", "TOKENS"]

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
TOKENS = ("<pad>", *[str(d) for d in range(10)], *OPERATORS, END)
_TOKEN_ID = {t: i for i, t in enumerate(TOKENS)}
_OPERATOR_PROBABILITY = 0.25


class _TooLong(Exception):
    """Raised while growing a tree once it can no longer satisfy ``length < max_length``."""


def _random_tree(rng: random.Random, depth: int, max_depth: int, max_args: int, budget: float = float("inf")):
    """A tree as nested ``(operator, [children])`` / int, and its length in tokens.

    ``budget`` is the length the tree must stay below; growth stops with :class:`_TooLong` as soon as the partial
    length reaches it. Rejection sampling then discards the tree, exactly as it would discard the finished one, so the
    distribution of kept trees is unchanged - but a tree of depth 10 and ~10^5 tokens is no longer built only to be
    thrown away (most of the original generator's time).
    """
    if depth < max_depth and rng.random() <= _OPERATOR_PROBABILITY:
        count = rng.randint(2, max_args)
        children, length = [], 2
        for _ in range(count):
            child, child_length = _random_tree(rng, depth + 1, max_depth, max_args, budget - length)
            children.append(child)
            length += child_length
            if length >= budget:
                raise _TooLong
        return (rng.choice(OPERATORS), children), length
    return rng.randrange(10), 1


def listops_value(tree) -> int:
    """The tree's answer: MIN, MAX, MED (``int(np.median)``: an even count's middle mean, truncated), SM (sum mod 10)."""
    if isinstance(tree, int):
        return tree
    operator, children = tree
    values = [listops_value(c) for c in children]
    if operator == "[MIN":
        return min(values)
    if operator == "[MAX":
        return max(values)
    if operator == "[MED":
        return int(np.median(values))
    return sum(values) % 10


def _tokens(tree, out: list[int]) -> None:
    if isinstance(tree, int):
        out.append(_TOKEN_ID[str(tree)])
        return
    operator, children = tree
    out.append(_TOKEN_ID[operator])
    for child in children:
        _tokens(child, out)
    out.append(_TOKEN_ID[END])


def listops_string(tree) -> str:
    """Space-separated tokens without parentheses, e.g. ``[MAX 2 9 [MIN 4 7 ] 0 ]``."""
    ids: list[int] = []
    _tokens(tree, ids)
    return " ".join(TOKENS[i] for i in ids)


_CHUNK = 4096  # trees per independently seeded chunk: the data do not depend on how many processes generate them


def _generate_chunk(args):
    """Kept trees of chunk ``index`` as ``(token bytes, length, label)`` tuples, in generation order."""
    index, count, max_depth, max_args, min_length, max_length, seed = args
    rng = random.Random(f"listops-{seed}-{index}")
    rows = []
    while len(rows) < count:
        try:
            tree, length = _random_tree(rng, 1, max_depth, max_args, budget=max_length)
        except _TooLong:
            continue
        if not min_length < length < max_length:
            continue
        ids: list[int] = []
        _tokens(tree, ids)
        rows.append((bytes(ids), length, listops_value(tree)))
    return rows


def generate_listops(*, num_samples: int, max_depth: int, max_args: int, min_length: int, max_length: int,
                     seq_len: int, seed: int, processes: int | None = None) -> dict[str, np.ndarray]:
    """Columns ``tokens [N, seq_len] uint8`` (0-padded), ``length [N]``, ``label [N]`` for N distinct trees.

    Trees are drawn in chunks of ``min(4096, N)``, chunk ``c`` from its own ``random.Random(f"listops-{seed}-{c}")``; chunks are
    concatenated in order and duplicates dropped (first occurrence kept), drawing further chunks until ``N`` distinct
    trees exist. The result depends only on the arguments, not on ``processes`` (chunks are generated in parallel
    by that many worker processes; default: up to 16 CPU cores, 1 for small requests).
    """
    if processes is None:
        processes = min(16, os.cpu_count() or 1) if num_samples > 2 * _CHUNK else 1
    tokens = np.zeros((num_samples, seq_len), dtype=np.uint8)
    lengths = np.zeros(num_samples, dtype=np.int64)
    labels = np.zeros(num_samples, dtype=np.int64)
    seen: set[bytes] = set()
    count, next_chunk = 0, 0
    chunk_size = min(_CHUNK, num_samples)
    # fork (where available) starts workers in milliseconds; they only run pure-Python code, never torch.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = multiprocessing.get_context(method).Pool(processes) if processes > 1 else None
    try:
        while count < num_samples:
            missing = num_samples - count
            chunks = max(1, -(-missing // chunk_size))
            jobs = [(next_chunk + i, chunk_size, max_depth, max_args, min_length, max_length, seed) for i in range(chunks)]
            next_chunk += chunks
            results = pool.map(_generate_chunk, jobs) if pool is not None else map(_generate_chunk, jobs)
            for rows in results:
                for key, length, label in rows:
                    if count == num_samples:
                        break
                    if key in seen:
                        continue
                    seen.add(key)
                    tokens[count, :length] = np.frombuffer(key, dtype=np.uint8)
                    lengths[count] = length
                    labels[count] = label
                    count += 1
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return {"tokens": tokens, "length": lengths, "label": labels}


class _TokenDataset(Dataset):
    def __init__(self, tokens: np.ndarray, lengths: np.ndarray, labels: np.ndarray) -> None:
        self.tokens, self.lengths, self.labels = tokens, lengths, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.tokens[index], int(self.lengths[index]), int(self.labels[index])


def pad_collate(fixed_length: int | None, buckets: tuple[int, ...] | None = None):
    """Collate ``(tokens, length, label)`` rows into ``(tokens [B, L], label [B], lengths [B])``.

    L is ``fixed_length`` if given; else the smallest of the sorted ``buckets`` that holds the batch's longest
    sequence (a few static shapes, so compiled kernels and cuFFT plans are reused); else that longest length."""

    def collate(rows):
        lengths = torch.tensor([r[1] for r in rows], dtype=torch.int64)
        longest = int(lengths.max())
        if fixed_length:
            width = fixed_length
        elif buckets:
            width = next(b for b in buckets if b >= longest)  # the last bucket is seq_len >= every length
        else:
            width = longest
        tokens = torch.from_numpy(np.stack([np.asarray(r[0])[:width] for r in rows]).astype(np.int64))
        labels = torch.tensor([r[2] for r in rows], dtype=torch.int64)
        return tokens, labels, lengths

    return collate


class ListOps(SplitDataModule):
    """ListOps classification (10 classes) over token sequences.

    Args:
        num_train, num_val, num_test: distinct trees per split (LRA: 96000 / 2000 / 2000).
        max_depth, max_args: tree depth and operator arity limits (LRA: 10, 10).
        min_length, max_length: kept lengths, exclusive bounds (LRA: 500, 2000).
        seq_len: the longest sequence fed to the model (>= max_length - 1); linked to the model's ``seq_len``.
        num_classes, vocab_size: fixed by the task (10, 16); arguments so the CLI links them to the model.
        pad_to_seq_len: pad every batch to ``seq_len`` instead of the batch's longest sequence.
        length_buckets: pad every batch to the smallest of these lengths that holds its longest sequence (static
            shapes for ``torch.compile``); ``seq_len`` is added as the last bucket. Padding changes the numbers a
            bidirectional model computes (padded steps pass through norms and the anti-causal kernel), within
            training noise (``docs/results.md``, issue 24). Default ``None``: the batch's longest sequence.
        batch_size, num_workers, seed, cache_dir, pin_memory: see ``FrameworkDataModule``.
    """

    def __init__(self, *, num_train: int = 96_000, num_val: int = 2_000, num_test: int = 2_000, max_depth: int = 10,
                 max_args: int = 10, min_length: int = 500, max_length: int = 2_000, seq_len: int = 2_048,
                 num_classes: int = 10, vocab_size: int = len(TOKENS), pad_to_seq_len: bool = False,
                 length_buckets: list[int] | None = None,
                 batch_size: int = 32, num_workers: int = 0, seed: int = 0, cache_dir: str | None = None,
                 pin_memory: bool = False) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, cache_dir=cache_dir,
                         pin_memory=pin_memory)
        for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test),
                            ("max_depth", max_depth), ("seq_len", seq_len)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(max_args, int) or max_args < 2:
            raise ValueError(f"max_args must be an integer >= 2, got {max_args!r}")
        if not isinstance(min_length, int) or not isinstance(max_length, int) or not 0 <= min_length < max_length - 1:
            raise ValueError(f"need integers 0 <= min_length < max_length - 1 (exclusive bounds), got "
                             f"min_length={min_length!r}, max_length={max_length!r}")
        if min_length >= 2 and max_depth < 2:
            raise ValueError(f"max_depth={max_depth} only makes single digits, which never exceed min_length={min_length}")
        if seq_len < max_length - 1:
            raise ValueError(f"seq_len={seq_len} must be >= max_length - 1 = {max_length - 1} (the longest kept tree)")
        if seq_len > 65_535:
            raise ValueError(f"seq_len must be <= 65535, got {seq_len}")
        if num_classes != 10:
            raise ValueError(f"ListOps has 10 classes (answers 0-9), got num_classes={num_classes!r}")
        if vocab_size != len(TOKENS):
            raise ValueError(f"ListOps has a vocabulary of {len(TOKENS)} tokens, got vocab_size={vocab_size!r}")
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.max_depth, self.max_args, self.min_length, self.max_length = max_depth, max_args, min_length, max_length
        self.seq_len, self.num_classes, self.vocab_size = seq_len, num_classes, vocab_size
        self.pad_to_seq_len = pad_to_seq_len
        if length_buckets is not None:
            if not isinstance(length_buckets, (list, tuple)) or not all(
                    isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= seq_len for b in length_buckets):
                raise ValueError(f"length_buckets must be a list of integers in [1, seq_len={seq_len}], "
                                 f"got {length_buckets!r}")
            length_buckets = sorted({*length_buckets, seq_len})
        self.length_buckets = tuple(length_buckets) if length_buckets is not None else None
        self.datasets: dict[str, _TokenDataset] = {}

    def _load(self):
        return self.cached("lra-listops", generate_listops, version=2,
                           num_samples=self.num_train + self.num_val + self.num_test, max_depth=self.max_depth,
                           max_args=self.max_args, min_length=self.min_length, max_length=self.max_length,
                           seq_len=self.seq_len, seed=self.seed)

    def prepare_data(self) -> None:
        self._load()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        data = self._load()[:]
        tokens, lengths, labels = (np.asarray(data[k]) for k in ("tokens", "length", "label"))
        bounds = {"train": (0, self.num_train), "val": (self.num_train, self.num_train + self.num_val),
                  "test": (self.num_train + self.num_val, len(labels))}
        for name, (lo, hi) in bounds.items():
            self.datasets[name] = _TokenDataset(tokens[lo:hi], lengths[lo:hi], labels[lo:hi])

    def collate(self, split: str):
        return pad_collate(self.seq_len if self.pad_to_seq_len else None, self.length_buckets)
