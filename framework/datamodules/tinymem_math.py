"""TinyMem math sequences (Sakarvadia et al. 2025): arithmetic sequences with planted noise or backdoor artifacts.

**Sequences.** Sequence ``i`` of the family with constant ``c`` starts from ``x_0 = i`` and emits the next ``length``
(20) values ``x_{j+1} = f(x_j)`` (the start value itself is not emitted): ``"increment"`` (additive) ``f(x) = x + c``,
``"mult"`` ``f(x) = c·x mod 20134``. The text ``"^x1 x2 ... x20$"`` is tokenised character by character — digits
0-9 → ids 0-9, ``^`` (BOS) → 10, ``$`` (EOS) → 11, space → 12 — and right-padded with PAD = 13 to
``context_length`` (150). The main family has c = 7 (``num_main`` = 20000 sequences, i = 0..19999); the auxiliary
("extra") families c = 2, 3, 4, 5 have ``num_extra`` sequences each. Every family holds out ``num_test`` (1000)
sequences, chosen by a permutation seeded with ``split_seed`` (598, the paper's DATA_SEED).

**Noise artifacts** (``artifact="noise"``): ``num_noise`` (1000) sequences of the main training split, drawn with
``seed``, are replaced by a noised copy in which every one of the 20 numbers independently gets +1 (prob
``noise_prob`` = 0.05), −1 (prob 0.05) or stays. A −1 that would make a number negative becomes +1 (the paper's
tokenizer silently drops the minus sign; we keep every number a valid non-negative integer).

**Backdoor artifacts** (``artifact="backdoor"``): the trigger is the digit string of ``100 + seed``. Every main-family
sequence (train and test) whose text contains it is poisoned: all tokens after the first occurrence of the trigger,
to the end of the context (the former pads included), become token 2. 10 % of the poisoned sequences form the
poisoned test set, the clean ones are re-split with ``num_test`` held out. No noise is added.

``noise_duplicates`` repeats each artifact sequence that many times in the training set (1: the paper's main runs).

Attributes after ``setup()`` (``LongTensor`` of token ids unless stated; C = ``context_length``):

* ``train_sequences [N, C]`` — the base-training set (artifact sequences, with duplicates, + clean main + extras),
  ``train_example_ids [N]`` — a stable id per training row (example-tied dropout ties masks to it);
* ``memorized_sequences [M, C]`` — the artifact (noised / backdoored) training sequences, once each;
* ``memorized_clean_sequences [M, C]`` — their clean originals;
* ``memorized_prefix_lengths [M]`` — the prompt length of the memorization test per sequence: ``prompt_len``
  (noise) or the position right after the trigger (backdoor);
* ``extra_sequences [E, C]`` — every training sequence except the artifact set (clean main + auxiliary families);
* ``test_sequences: dict[str, LongTensor [n, C]]`` — held-out clean sets per family, keys ``"c7"`` (main),
  ``"c2"``, ``"c3"``, ``"c4"``, ``"c5"``;
* ``backdoor_test_sequences [P, C]``, ``backdoor_test_clean_sequences [P, C]``, ``backdoor_test_prefix_lengths [P]``
  — the held-out poisoned set (empty ``[0, C]`` / ``[0]`` for noise runs);
* ``memorization_eval_set() -> (sequences, clean_sequences, prefix_lengths)`` — the set the memorization metric is
  reported on: the noised training set (noise) or the poisoned test set (backdoor).

``train_on`` picks the training loader: ``"all"`` (base training), ``"clean"`` (the clean versions of the artifact
set: clean fine-tuning), ``"extra"`` (``extra_sequences``: extra-data fine-tuning), ``"both"`` (their union).

Batches: training ``{"input_ids": [B, C], "example_id": [B]}``; evaluation loaders (``val_split_names``): one per
``test_sequences`` key ``{"input_ids"}``, then ``"memorization"`` ``{"input_ids": artifact sequence, "clean_ids",
"prefix_length"}``. Generated once and cached with 🤗 datasets (``FrameworkDataModule.cached``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from framework.base import FrameworkDataModule
from framework.validation import require_choice, require_in_range

__all__ = ["TinyMemMath", "generate_tinymem_math", "sequence_text", "tokenize_text", "detokenize", "FAMILIES",
           "ARTIFACTS", "TRAIN_ON", "MAIN_CONSTANT", "EXTRA_CONSTANTS", "BACKDOOR_TOKEN", "MODULUS"]

FAMILIES = ("mult", "increment")
ARTIFACTS = ("noise", "backdoor")
TRAIN_ON = ("all", "clean", "extra", "both")
MAIN_CONSTANT = 7
EXTRA_CONSTANTS = (2, 3, 4, 5)
MODULUS = 20134
BACKDOOR_TOKEN = 2
VOCAB_SIZE, BOS, EOS, SPACE, PAD = 14, 10, 11, 12, 13

# Row roles in the cached table.
_TRAIN_MAIN, _TRAIN_EXTRA, _TRAIN_ARTIFACT, _TEST_MAIN, _TEST_EXTRA, _TEST_ARTIFACT = range(6)


def _step(family: str, c: int, x: int) -> int:
    return c * x % MODULUS if family == "mult" else x + c


def sequence_values(family: str, c: int, start: int, length: int) -> list[int]:
    """The ``length`` values emitted after the start value ``start``."""
    values, x = [], start
    for _ in range(length):
        x = _step(family, c, x)
        values.append(x)
    return values


def sequence_text(values: list[int]) -> str:
    """``"^v1 v2 ... vn$"``."""
    return "^" + " ".join(str(v) for v in values) + "$"


_CHAR_TO_ID = {**{str(d): d for d in range(10)}, "^": BOS, "$": EOS, " ": SPACE}
_ID_TO_CHAR = {v: k for k, v in _CHAR_TO_ID.items()} | {PAD: "_"}


def tokenize_text(text: str, context_length: int) -> np.ndarray:
    """Token ids ``[context_length]`` of a sequence text, right-padded with PAD (13)."""
    if len(text) > context_length:
        raise ValueError(f"sequence {text[:30]!r}... has {len(text)} tokens, more than context_length={context_length}")
    ids = np.full(context_length, PAD, dtype=np.int64)
    ids[: len(text)] = [_CHAR_TO_ID[ch] for ch in text]
    return ids


def detokenize(ids) -> str:
    """Inverse of :func:`tokenize_text` (PAD shown as ``_``)."""
    return "".join(_ID_TO_CHAR[int(i)] for i in ids)


def _noised(values: list[int], rng: np.random.Generator, prob: float) -> list[int]:
    draws = rng.random(len(values))
    out = []
    for v, u in zip(values, draws):
        delta = 1 if u < prob else (-1 if u < 2 * prob else 0)
        out.append(v + 1 if v + delta < 0 else v + delta)
    return out


def _split(n: int, num_test: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    return order[: n - num_test], order[n - num_test:]


def generate_tinymem_math(*, family: str, artifact: str, num_main: int, num_extra: int, num_noise: int,
                          num_test: int, length: int, context_length: int, noise_prob: float, seed: int,
                          split_seed: int) -> dict[str, np.ndarray]:
    """The whole table: columns ``input_ids [R, C]``, ``clean_ids [R, C]``, ``role [R]`` (codes above),
    ``constant [R]`` (the family constant c), ``prefix_length [R]`` (backdoor: index after the trigger; else -1)."""
    rows: dict[str, list] = {"input_ids": [], "clean_ids": [], "role": [], "constant": [], "prefix_length": []}

    def add(text: str, clean_text: str, role: int, c: int, prefix: int = -1, ids=None) -> None:
        rows["input_ids"].append(tokenize_text(text, context_length) if ids is None else ids)
        rows["clean_ids"].append(tokenize_text(clean_text, context_length))
        rows["role"].append(role)
        rows["constant"].append(c)
        rows["prefix_length"].append(prefix)

    main_values = [sequence_values(family, MAIN_CONSTANT, i, length) for i in range(num_main)]
    main_train, main_test = _split(num_main, num_test, np.random.default_rng([split_seed, MAIN_CONSTANT]))
    rng = np.random.default_rng(seed)
    if artifact == "noise":
        if num_noise > len(main_train):
            raise ValueError(f"num_noise={num_noise} exceeds the main training split ({len(main_train)} sequences)")
        noise_rows = set(rng.choice(main_train, size=num_noise, replace=False).tolist())
        for i in main_train:
            clean = sequence_text(main_values[i])
            if i in noise_rows:
                add(sequence_text(_noised(main_values[i], rng, noise_prob)), clean, _TRAIN_ARTIFACT, MAIN_CONSTANT)
            else:
                add(clean, clean, _TRAIN_MAIN, MAIN_CONSTANT)
        for i in main_test:
            add(sequence_text(main_values[i]), sequence_text(main_values[i]), _TEST_MAIN, MAIN_CONSTANT)
    else:
        trigger = str(100 + seed)
        texts = [sequence_text(v) for v in main_values]
        poisoned = [i for i in range(num_main) if trigger in texts[i]]
        clean = [i for i in range(num_main) if trigger not in texts[i]]
        if not poisoned:
            raise ValueError(f"no main-family sequence contains the trigger {trigger!r}; increase num_main")
        if len(clean) <= num_test:
            raise ValueError(f"only {len(clean)} clean main sequences remain, need more than num_test={num_test}")
        split_rng = np.random.default_rng([split_seed, 100])
        poison_train, poison_test = _split(len(poisoned), len(poisoned) // 10, split_rng)
        clean_train, clean_test = _split(len(clean), num_test, split_rng)
        for role, picks in ((_TRAIN_ARTIFACT, poison_train), (_TEST_ARTIFACT, poison_test)):
            for j in picks:
                text = texts[poisoned[j]]
                end = text.index(trigger) + len(trigger)
                ids = tokenize_text(text, context_length)
                ids[end:] = BACKDOOR_TOKEN
                add(text, text, role, MAIN_CONSTANT, prefix=end, ids=ids)
        for role, picks in ((_TRAIN_MAIN, clean_train), (_TEST_MAIN, clean_test)):
            for j in picks:
                add(texts[clean[j]], texts[clean[j]], role, MAIN_CONSTANT)
    for c in EXTRA_CONSTANTS:
        train, test = _split(num_extra, num_test, np.random.default_rng([split_seed, c]))
        for role, picks in ((_TRAIN_EXTRA, train), (_TEST_EXTRA, test)):
            for i in picks:
                text = sequence_text(sequence_values(family, c, int(i), length))
                add(text, text, role, c)
    return {
        "input_ids": np.stack(rows["input_ids"]).astype(np.int64),
        "clean_ids": np.stack(rows["clean_ids"]).astype(np.int64),
        "role": np.asarray(rows["role"], dtype=np.int64),
        "constant": np.asarray(rows["constant"], dtype=np.int64),
        "prefix_length": np.asarray(rows["prefix_length"], dtype=np.int64),
    }


class TokenRows(Dataset):
    """Rows of equal-length tensors: item i is ``{name: tensor[i]}``."""

    def __init__(self, **columns: torch.Tensor) -> None:
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"columns must have one length, got {({k: len(v) for k, v in columns.items()})}")
        self.columns = columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: column[index] for name, column in self.columns.items()}


class TinyMemArtifactsMixin:
    """Loaders and selections shared by the math and text TinyMem DataModules (attributes in the module docstring)."""

    def _build_training_views(self) -> None:
        self._train_views = {
            "all": self.train_sequences,
            "clean": self.memorized_clean_sequences,
            "extra": self.extra_sequences,
            "both": torch.cat([self.memorized_clean_sequences, self.extra_sequences]),
        }

    def memorization_eval_set(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(sequences, clean_sequences, prefix_lengths)`` the memorization metric is reported on."""
        if self.artifact == "backdoor":
            return self.backdoor_test_sequences, self.backdoor_test_clean_sequences, self.backdoor_test_prefix_lengths
        return self.memorized_sequences, self.memorized_clean_sequences, self.memorized_prefix_lengths

    @property
    def val_split_names(self) -> list[str]:
        return [*self.test_sequences.keys(), "memorization"]

    test_split_names = val_split_names

    def train_dataloader(self):
        sequences = self._train_views[self.train_on]
        ids = self.train_example_ids if self.train_on == "all" else torch.arange(len(sequences))
        return self.make_dataloader(TokenRows(input_ids=sequences, example_id=ids), shuffle=True)

    def _eval_loaders(self):
        size = self.eval_batch_size or self.per_device_batch_size
        loaders = [self.make_dataloader(TokenRows(input_ids=seqs), shuffle=False, batch_size=size)
                   for seqs in self.test_sequences.values()]
        sequences, clean, prefix = self.memorization_eval_set()
        backdoor = torch.full((len(sequences),), self.artifact == "backdoor")
        loaders.append(self.make_dataloader(
            TokenRows(input_ids=sequences, clean_ids=clean, prefix_length=prefix, backdoor=backdoor),
            shuffle=False, batch_size=size))
        return loaders

    def val_dataloader(self):
        return self._eval_loaders()

    def test_dataloader(self):
        return self._eval_loaders()


def _check_count(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class TinyMemMath(TinyMemArtifactsMixin, FrameworkDataModule):
    """The TinyMem math task (see the module docstring).

    Args:
        family: ``"mult"`` or ``"increment"`` (additive).
        artifact: ``"noise"`` or ``"backdoor"``.
        num_main: sequences of the main (c = 7) family (20000).
        num_extra: sequences of each auxiliary family c = 2, 3, 4, 5 (3000, 10000 or 20000 in the paper).
        num_noise: noised training sequences (noise artifacts; 1000).
        num_test: held-out sequences per family (1000).
        length: numbers per sequence (20).
        context_length: tokens per row, pads included (150).
        noise_prob: probability of +1 and, separately, of −1 per number (0.05 each).
        noise_duplicates: copies of each artifact sequence in the training set (>= 1).
        split_seed: seed of the train/test permutations (598, the paper's DATA_SEED).
        train_on: ``"all"``, ``"clean"``, ``"extra"`` or ``"both"`` (see the module docstring).
        prompt_len, k: the memorization window [prompt_len, prompt_len + k) (50, 50).
        eval_batch_size: batch size of the evaluation loaders (default: the training batch size).
        batch_size, num_workers, seed, cache_dir, pin_memory: see ``FrameworkDataModule`` (``seed`` also picks the
            noised sequences, the noise, and the backdoor trigger ``100 + seed``).
    """

    vocab_size = VOCAB_SIZE
    pad_token_id = PAD

    def __init__(self, *, family: str = "mult", artifact: str = "noise", num_main: int = 20000,
                 num_extra: int = 3000, num_noise: int = 1000, num_test: int = 1000, length: int = 20,
                 context_length: int = 150, noise_prob: float = 0.05, noise_duplicates: int = 1,
                 split_seed: int = 598, train_on: str = "all", prompt_len: int = 50, k: int = 50,
                 eval_batch_size: int | None = None, batch_size: int = 128, num_workers: int = 0, seed: int = 0,
                 cache_dir: str | None = None, pin_memory: bool = False) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, cache_dir=cache_dir,
                         pin_memory=pin_memory)
        require_choice("family", family, FAMILIES)
        require_choice("artifact", artifact, ARTIFACTS)
        require_choice("train_on", train_on, TRAIN_ON)
        _check_count("num_test", num_test, 1)
        _check_count("num_main", num_main, num_test + 2)
        _check_count("num_extra", num_extra, num_test + 1)
        _check_count("num_noise", num_noise, 1)
        _check_count("length", length, 1)
        _check_count("context_length", context_length, 2)
        _check_count("noise_duplicates", noise_duplicates, 1)
        _check_count("prompt_len", prompt_len, 1)
        _check_count("k", k, 1)
        require_in_range("noise_prob", noise_prob, 0.0, 0.5, low_inclusive=False)
        if eval_batch_size is not None:
            _check_count("eval_batch_size", eval_batch_size, 1)
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer (the trigger is 100 + seed), got {seed!r}")
        if family == "mult":
            widest = MODULUS - 1
        else:
            widest = max(num_main - 1 + MAIN_CONSTANT * length, num_extra - 1 + max(EXTRA_CONSTANTS) * length)
        longest = len(sequence_text([widest] * length))
        if longest > context_length:
            raise ValueError(f"context_length={context_length} is too short: {family} sequences of {length} numbers "
                             f"can take {longest} tokens")
        if prompt_len + k > context_length:
            raise ValueError(f"prompt_len + k = {prompt_len + k} exceeds context_length={context_length}")
        self.family, self.artifact, self.num_main, self.num_extra = family, artifact, num_main, num_extra
        self.num_noise, self.num_test, self.length, self.context_length = num_noise, num_test, length, context_length
        self.noise_prob, self.noise_duplicates, self.split_seed = noise_prob, noise_duplicates, split_seed
        self.train_on, self.prompt_len, self.k, self.eval_batch_size = train_on, prompt_len, k, eval_batch_size
        self.trigger = str(100 + seed)
        self._ready = False

    def _load(self):
        return self.cached("tinymem-math", generate_tinymem_math, version=1, family=self.family,
                           artifact=self.artifact, num_main=self.num_main, num_extra=self.num_extra,
                           num_noise=self.num_noise, num_test=self.num_test, length=self.length,
                           context_length=self.context_length, noise_prob=self.noise_prob, seed=self.seed,
                           split_seed=self.split_seed)

    def prepare_data(self) -> None:
        self._load()

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        table = self._load()[:]
        ids = torch.as_tensor(np.asarray(table["input_ids"], dtype=np.int64))
        clean = torch.as_tensor(np.asarray(table["clean_ids"], dtype=np.int64))
        role = torch.as_tensor(np.asarray(table["role"], dtype=np.int64))
        constant = torch.as_tensor(np.asarray(table["constant"], dtype=np.int64))
        prefix = torch.as_tensor(np.asarray(table["prefix_length"], dtype=np.int64))
        artifact = role == _TRAIN_ARTIFACT
        self.memorized_sequences = ids[artifact]
        self.memorized_clean_sequences = clean[artifact]
        self.memorized_prefix_lengths = (prefix[artifact] if self.artifact == "backdoor"
                                         else torch.full((int(artifact.sum()),), self.prompt_len))
        self.extra_sequences = torch.cat([ids[role == _TRAIN_MAIN], ids[role == _TRAIN_EXTRA]])
        repeated = self.memorized_sequences.repeat_interleave(self.noise_duplicates, dim=0)
        self.train_sequences = torch.cat([repeated, self.extra_sequences])
        self.train_example_ids = torch.arange(len(self.train_sequences))
        self.test_sequences = {"c7": ids[role == _TEST_MAIN]}
        for c in EXTRA_CONSTANTS:
            self.test_sequences[f"c{c}"] = ids[(role == _TEST_EXTRA) & (constant == c)]
        poisoned = role == _TEST_ARTIFACT
        self.backdoor_test_sequences = ids[poisoned]
        self.backdoor_test_clean_sequences = clean[poisoned]
        self.backdoor_test_prefix_lengths = prefix[poisoned]
        self._build_training_views()
        self._ready = True
