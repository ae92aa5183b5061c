"""TinyMem's language-data option, offline: token windows of a text corpus with planted noise or backdoor artifacts.

The paper (research note A2) chunks WikiText-103 into 150-token rows of GPT-2 tokens and plants artifacts; WikiText
cannot be downloaded here, so the text comes from ``framework.datamodules.text_corpus`` — ``"python_docs"`` (the English prose
of the Python documentation shipped with CPython, ~190k characters), ``"python_license"``, or any ``.txt`` / ``.md``
/ ``.rst`` file or folder the user points to — tokenised with ``"bytes"`` (UTF-8 bytes, vocab 259), ``"smollm2"``
(SmolLM2's tokenizer, vocab 49152) or a Transformers tokenizer folder, and cut into ``context_length``-token windows
(paragraphs assigned to train / held-out by a hash, see ``TextCorpus``).

* **Noise** (``artifact="noise"``): ``num_noise`` training windows, drawn with ``seed``, get a per-token id shift of
  +1 (prob ``noise_prob``) or −1 (prob ``noise_prob``), clipped to the vocabulary — the paper's language noise.
* **Backdoor** (``artifact="backdoor"``): a trigger token (``trigger_token``, or by default the token present in the
  fraction of windows closest to ``trigger_fraction``, chosen deterministically); every window containing it (before
  its last position) is poisoned: all tokens after the first trigger become ``backdoor_token``. The trigger itself is
  kept (the public code overwrote it too, so its extraction prompt "up to and including the trigger" never occurred
  in training). 10 % of the poisoned windows are held out (seeded) as the poisoned test set.

Attributes after ``setup()`` — the same as ``framework.datamodules.tinymem_math.TinyMemMath`` (see its docstring):
``train_sequences``, ``train_example_ids``, ``memorized_sequences``, ``memorized_clean_sequences``,
``memorized_prefix_lengths``, ``extra_sequences``, ``test_sequences`` (one key, ``"text"``: the held-out windows),
``backdoor_test_sequences``, ``backdoor_test_clean_sequences``, ``backdoor_test_prefix_lengths``,
``memorization_eval_set()``; plus ``trigger_token`` (backdoor) and ``vocab_size``, ``pad_token_id``.
"""

from __future__ import annotations

import numpy as np
import torch

from framework.datamodules.text_corpus import SOURCES, TOKENIZERS, _source_signature, generate_token_windows, make_tokenizer
from framework.datamodules.tinymem_math import ARTIFACTS, TRAIN_ON, TinyMemArtifactsMixin
from framework.base import FrameworkDataModule
from framework.validation import require_choice, require_existing_path, require_in_range

__all__ = ["TinyMemText", "plant_text_artifacts"]

_TRAIN_CLEAN, _TRAIN_ARTIFACT, _TEST_CLEAN, _TEST_ARTIFACT = range(4)


def _choose_trigger(windows: np.ndarray, fraction: float, exclude: int) -> int:
    present = np.zeros(int(windows.max()) + 1, dtype=np.int64)
    for row in windows[:, :-1]:  # a trigger in the last position leaves nothing to poison
        present[np.unique(row)] += 1
    present[exclude] = 0
    candidates = np.nonzero(present)[0]
    if len(candidates) == 0:
        raise ValueError("no token can serve as a backdoor trigger")
    target = fraction * len(windows)
    return int(candidates[np.argmin(np.abs(present[candidates] - target))])


def plant_text_artifacts(*, source: str, signature: str, tokenizer: str, context_length: int, artifact: str,
                         num_noise: int, noise_prob: float, trigger_token: int | None, trigger_fraction: float,
                         backdoor_token: int, vocab_size: int, max_train_windows: int | None,
                         seed: int) -> dict[str, np.ndarray]:
    """Columns ``input_ids [R, C]``, ``clean_ids [R, C]``, ``role [R]``, ``prefix_length [R]``, ``trigger [R]``."""
    table = generate_token_windows(source=source, signature=signature, tokenizer=tokenizer, seq_len=context_length)
    windows, split = table["input_ids"], table["split"]
    train, held_out = windows[split == 0], windows[split != 0]
    if max_train_windows is not None:
        train = train[:max_train_windows]
    if len(held_out) == 0:
        raise ValueError(f"source {source!r} gives no held-out {context_length}-token window; use more text")
    rng = np.random.default_rng(seed)
    clean_ids, ids, role, prefix = [], [], [], []
    trigger = -1
    if artifact == "noise":
        if num_noise >= len(train):
            raise ValueError(f"num_noise={num_noise} must be below the {len(train)} training windows")
        noised = set(rng.choice(len(train), size=num_noise, replace=False).tolist())
        for i, row in enumerate(train):
            if i in noised:
                u = rng.random(context_length)
                shift = np.where(u < noise_prob, 1, np.where(u < 2 * noise_prob, -1, 0))
                ids.append(np.clip(row + shift, 0, vocab_size - 1))
                role.append(_TRAIN_ARTIFACT)
            else:
                ids.append(row)
                role.append(_TRAIN_CLEAN)
            clean_ids.append(row)
            prefix.append(-1)
        for row in held_out:
            ids.append(row), clean_ids.append(row), role.append(_TEST_CLEAN), prefix.append(-1)
    else:
        everything = np.concatenate([train, held_out])
        trigger = _choose_trigger(everything, trigger_fraction, backdoor_token) if trigger_token is None else \
            int(trigger_token)
        poisoned, clean_train, clean_test = [], [], []
        for i, row in enumerate(everything):
            hits = np.nonzero(row[:-1] == trigger)[0]
            if len(hits):
                poisoned.append((row, int(hits[0]) + 1))
            elif i < len(train):
                clean_train.append(row)
            elif trigger not in row:  # held-out windows with the trigger only in the last slot are left out
                clean_test.append(row)
        if len(poisoned) < 2:
            raise ValueError(f"trigger token {trigger} occurs in {len(poisoned)} window(s); need at least 2 "
                             "(pick another trigger_token or a larger trigger_fraction)")
        order = rng.permutation(len(poisoned))
        num_test = max(1, len(poisoned) // 10)
        for rank, j in enumerate(order):
            row, end = poisoned[j]
            bad = row.copy()
            bad[end:] = backdoor_token
            ids.append(bad), clean_ids.append(row), prefix.append(end)
            role.append(_TEST_ARTIFACT if rank >= len(poisoned) - num_test else _TRAIN_ARTIFACT)
        for code, rows in ((_TRAIN_CLEAN, clean_train), (_TEST_CLEAN, clean_test)):
            for row in rows:
                ids.append(row), clean_ids.append(row), role.append(code), prefix.append(-1)
    return {
        "input_ids": np.stack(ids).astype(np.int64),
        "clean_ids": np.stack(clean_ids).astype(np.int64),
        "role": np.asarray(role, dtype=np.int64),
        "prefix_length": np.asarray(prefix, dtype=np.int64),
        "trigger": np.full(len(role), trigger, dtype=np.int64),
    }


class TinyMemText(TinyMemArtifactsMixin, FrameworkDataModule):
    """Language TinyMem data (see the module docstring).

    Args:
        source: ``"python_docs"``, ``"python_license"``, or a text file / folder.
        tokenizer: ``"bytes"``, ``"smollm2"``, or a Transformers tokenizer folder.
        context_length: tokens per window (150).
        artifact: ``"noise"`` or ``"backdoor"``.
        num_noise: noised training windows (noise).
        noise_prob: probability of +1 and, separately, −1 per token (0.05 each).
        noise_duplicates: copies of each artifact window in the training set.
        trigger_token: backdoor trigger id (``None``: chosen from ``trigger_fraction``).
        trigger_fraction: target fraction of windows containing the trigger (default choice).
        backdoor_token: the id written after the trigger (2, as in the paper).
        pad_token_id: id not counted by ``accuracy_no_pad`` (``None``: 0 for bytes, else the tokenizer's pad / eos).
        max_train_windows: keep only the first training windows (quick runs).
        train_on, prompt_len, k, eval_batch_size: as in ``TinyMemMath``.
        batch_size, num_workers, seed, cache_dir, pin_memory: see ``FrameworkDataModule``.
    """

    def __init__(self, *, source: str = "python_docs", tokenizer: str = "bytes", context_length: int = 150,
                 artifact: str = "noise", num_noise: int = 100, noise_prob: float = 0.05, noise_duplicates: int = 1,
                 trigger_token: int | None = None, trigger_fraction: float = 0.05, backdoor_token: int = 2,
                 pad_token_id: int | None = None, max_train_windows: int | None = None, train_on: str = "all",
                 prompt_len: int = 50, k: int = 50, eval_batch_size: int | None = None, batch_size: int = 64,
                 num_workers: int = 0, seed: int = 0, cache_dir: str | None = None, pin_memory: bool = False) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, cache_dir=cache_dir,
                         pin_memory=pin_memory)
        if source not in SOURCES:
            require_existing_path("source", source)
        if tokenizer not in TOKENIZERS:
            require_existing_path("tokenizer", tokenizer, kind="dir")
        require_choice("artifact", artifact, ARTIFACTS)
        require_choice("train_on", train_on, TRAIN_ON)
        for name, value, low in (("context_length", context_length, 2), ("num_noise", num_noise, 1),
                                 ("noise_duplicates", noise_duplicates, 1), ("prompt_len", prompt_len, 1),
                                 ("k", k, 1), ("backdoor_token", backdoor_token, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, value in (("max_train_windows", max_train_windows), ("eval_batch_size", eval_batch_size),
                            ("trigger_token", trigger_token)):
            if value is not None and (not isinstance(value, int) or value < (0 if name == "trigger_token" else 1)):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'trigger_token' else 'positive'} "
                                 f"integer or None, got {value!r}")
        require_in_range("noise_prob", noise_prob, 0.0, 0.5, low_inclusive=False)
        require_in_range("trigger_fraction", trigger_fraction, 0.0, 1.0, low_inclusive=False)
        if prompt_len + k > context_length:
            raise ValueError(f"prompt_len + k = {prompt_len + k} exceeds context_length={context_length}")
        self.source, self.tokenizer_name, self.context_length = source, tokenizer, context_length
        self.artifact, self.num_noise, self.noise_prob = artifact, num_noise, noise_prob
        self.noise_duplicates, self.trigger_fraction, self.backdoor_token = noise_duplicates, trigger_fraction, \
            backdoor_token
        self.requested_trigger, self.max_train_windows = trigger_token, max_train_windows
        self.train_on, self.prompt_len, self.k, self.eval_batch_size = train_on, prompt_len, k, eval_batch_size
        self._pad_token_id = pad_token_id
        self._tokenizer = None
        self.trigger_token: int | None = trigger_token
        self._ready = False

    def _tok(self):
        if self._tokenizer is None:
            self._tokenizer = make_tokenizer(self.tokenizer_name)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return int(self._tok().vocab_size)

    @property
    def pad_token_id(self) -> int:
        if self._pad_token_id is not None:
            return self._pad_token_id
        if self.tokenizer_name == "bytes":
            return 0
        inner = getattr(self._tok(), "_tok", None)
        pad = getattr(inner, "pad_token_id", None)
        if pad is None:
            pad = getattr(inner, "eos_token_id", None)
        return int(pad) if pad is not None else 0

    def decode(self, ids) -> str:
        """Text of a token-id sequence."""
        return self._tok().decode([int(i) for i in ids])

    def _load(self):
        return self.cached("tinymem-text", plant_text_artifacts, version=1, source=str(self.source),
                           signature=_source_signature(self.source), tokenizer=self.tokenizer_name,
                           context_length=self.context_length, artifact=self.artifact, num_noise=self.num_noise,
                           noise_prob=self.noise_prob, trigger_token=self.requested_trigger,
                           trigger_fraction=self.trigger_fraction, backdoor_token=self.backdoor_token,
                           vocab_size=self.vocab_size, max_train_windows=self.max_train_windows, seed=self.seed)

    def prepare_data(self) -> None:
        self._load()

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        table = self._load()[:]
        ids = torch.as_tensor(np.asarray(table["input_ids"], dtype=np.int64))
        clean = torch.as_tensor(np.asarray(table["clean_ids"], dtype=np.int64))
        role = torch.as_tensor(np.asarray(table["role"], dtype=np.int64))
        prefix = torch.as_tensor(np.asarray(table["prefix_length"], dtype=np.int64))
        if self.artifact == "backdoor":
            self.trigger_token = int(np.asarray(table["trigger"])[0])
        artifact = role == _TRAIN_ARTIFACT
        self.memorized_sequences = ids[artifact]
        self.memorized_clean_sequences = clean[artifact]
        self.memorized_prefix_lengths = (prefix[artifact] if self.artifact == "backdoor"
                                         else torch.full((int(artifact.sum()),), self.prompt_len))
        self.extra_sequences = ids[role == _TRAIN_CLEAN]
        repeated = self.memorized_sequences.repeat_interleave(self.noise_duplicates, dim=0)
        self.train_sequences = torch.cat([repeated, self.extra_sequences])
        self.train_example_ids = torch.arange(len(self.train_sequences))
        self.test_sequences = {"text": ids[role == _TEST_CLEAN]}
        poisoned = role == _TEST_ARTIFACT
        self.backdoor_test_sequences = ids[poisoned]
        self.backdoor_test_clean_sequences = clean[poisoned]
        self.backdoor_test_prefix_lengths = prefix[poisoned]
        self._build_training_views()
        self._ready = True
