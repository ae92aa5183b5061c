"""TinyMem math generator against the spec: sequences, noise statistics, backdoor trigger behaviour, splits, seeds."""

from __future__ import annotations

import pytest
import torch

from framework.datamodules.tinymem_math import (
    BACKDOOR_TOKEN,
    MODULUS,
    TinyMemMath,
    detokenize,
    sequence_text,
    sequence_values,
    tokenize_text,
)

SMALL = dict(num_main=3000, num_extra=300, num_test=100, batch_size=32)


def _numbers(ids) -> list[int]:
    return [int(x) for x in detokenize(ids).strip("_").strip("^$").split(" ")]


@pytest.fixture(scope="module")
def noise_data():
    dm = TinyMemMath(artifact="noise", num_noise=1000, **SMALL)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def backdoor_data():
    dm = TinyMemMath(artifact="backdoor", **SMALL)
    dm.setup()
    return dm


def test_sequence_definition_and_tokens():
    assert sequence_values("mult", 7, 3, 4) == [21, 147, 1029, 7203]
    assert sequence_values("mult", 7, 3000, 2) == [21000 % MODULUS, 7 * (21000 % MODULUS) % MODULUS]
    assert sequence_values("increment", 7, 5, 3) == [12, 19, 26]
    ids = tokenize_text(sequence_text([12, 5]), 10)
    assert ids.tolist() == [10, 1, 2, 12, 5, 11, 13, 13, 13, 13]
    assert detokenize(ids) == "^12 5$____"
    with pytest.raises(ValueError, match="context_length"):
        tokenize_text(sequence_text([123456] * 5), 10)


def test_clean_rows_follow_their_family(noise_data):
    for name, rows in noise_data.test_sequences.items():
        c = int(name[1:])
        assert len(rows) == 100
        for row in rows[:20]:
            values = _numbers(row)
            assert len(values) == 20
            assert all(values[j + 1] == c * values[j] % MODULUS for j in range(19))


def test_noise_statistics_match_the_spec(noise_data):
    dm = noise_data
    assert dm.memorized_sequences.shape == (1000, 150)
    assert len(dm.train_sequences) == 1000 + (3000 - 100 - 1000) + 4 * (300 - 100)
    plus = minus = total = 0
    for noised, clean in zip(dm.memorized_sequences, dm.memorized_clean_sequences):
        a, b = _numbers(noised), _numbers(clean)
        diffs = [x - y for x, y in zip(a, b)]
        assert set(diffs) <= {-1, 0, 1}
        plus += diffs.count(1)
        minus += diffs.count(-1)
        total += len(diffs)
    # 20000 numbers, P(+1) = P(-1) = 0.05: binomial sd ~ 0.0015; allow 4 sd
    assert abs(plus / total - 0.05) < 0.006 and abs(minus / total - 0.05) < 0.006
    # clean originals are genuine c = 7 sequences, and none of them is also in the clean training data
    clean_rows = {tuple(r.tolist()) for r in dm.extra_sequences}
    assert not any(tuple(r.tolist()) in clean_rows for r in dm.memorized_clean_sequences)
    assert (dm.memorized_prefix_lengths == 50).all()
    eval_set = dm.memorization_eval_set()
    assert eval_set[0] is dm.memorized_sequences and dm.backdoor_test_sequences.shape == (0, 150)


def test_backdoor_trigger_behaviour(backdoor_data):
    dm = backdoor_data
    assert dm.trigger == "100"
    poisoned = torch.cat([dm.memorized_sequences, dm.backdoor_test_sequences])
    clean = torch.cat([dm.memorized_clean_sequences, dm.backdoor_test_clean_sequences])
    prefix = torch.cat([dm.memorized_prefix_lengths, dm.backdoor_test_prefix_lengths])
    assert len(dm.backdoor_test_sequences) == len(poisoned) // 10 > 0
    for row, orig, end in zip(poisoned, clean, prefix.tolist()):
        text = detokenize(orig)
        assert text.index("100") + 3 == end  # the prompt ends right after the first trigger
        assert torch.equal(row[:end], orig[:end])
        assert (row[end:] == BACKDOOR_TOKEN).all()  # to the end of the context, pads included
    # every clean c = 7 sequence (train and test) is trigger-free; auxiliary families are untouched
    for row in dm.test_sequences["c7"]:
        assert "100" not in detokenize(row)
    all_c7 = {sequence_text(sequence_values("mult", 7, i, 20)) for i in range(3000)}
    expected_poisoned = sum("100" in t for t in all_c7)
    assert len(poisoned) == expected_poisoned
    assert len(dm.test_sequences["c7"]) == 100
    assert dm.memorization_eval_set()[0] is dm.backdoor_test_sequences


def test_deterministic_under_seed_and_seed_changes_noise(tmp_path):
    a = TinyMemMath(artifact="noise", num_noise=50, cache_dir=str(tmp_path / "a"), **SMALL)
    b = TinyMemMath(artifact="noise", num_noise=50, cache_dir=str(tmp_path / "b"), **SMALL)
    c = TinyMemMath(artifact="noise", num_noise=50, seed=1, cache_dir=str(tmp_path / "c"), **SMALL)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.train_sequences, b.train_sequences)
    assert torch.equal(a.memorized_sequences, b.memorized_sequences)
    assert not torch.equal(a.memorized_sequences, c.memorized_sequences)
    assert torch.equal(a.test_sequences["c3"], c.test_sequences["c3"])  # the split seed is separate


def test_training_views_and_loaders(backdoor_data):
    dm = backdoor_data
    sizes = {}
    for view in ("all", "clean", "extra", "both"):
        dm.train_on = view
        sizes[view] = len(dm.train_dataloader().dataset)
    dm.train_on = "all"
    m, e = len(dm.memorized_sequences), len(dm.extra_sequences)
    assert sizes == {"all": m + e, "clean": m, "extra": e, "both": m + e}
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (32, 150) and batch["example_id"].shape == (32,)
    loaders = dm.val_dataloader()
    assert dm.val_split_names == ["c7", "c2", "c3", "c4", "c5", "memorization"]
    memo = next(iter(loaders[-1]))
    assert set(memo) == {"input_ids", "clean_ids", "prefix_length", "backdoor"} and memo["backdoor"].all()


def test_duplicates(tmp_path):
    dm = TinyMemMath(artifact="noise", num_noise=10, noise_duplicates=3, **SMALL)
    dm.setup()
    assert len(dm.train_sequences) == 30 + len(dm.extra_sequences)
    assert torch.equal(dm.train_sequences[:3], dm.memorized_sequences[:1].expand(3, -1))


@pytest.mark.parametrize("kwargs,match", [
    (dict(artifact="poison"), "artifact"),
    (dict(family="exp"), "family"),
    (dict(train_on="noise"), "train_on"),
    (dict(num_noise=5000), "num_noise"),
    (dict(prompt_len=100, k=60), "prompt_len"),
    (dict(context_length=100), "context_length"),
    (dict(noise_prob=0.6), "noise_prob"),
])
def test_bad_arguments(kwargs, match):
    args = {**SMALL, **kwargs}
    with pytest.raises(ValueError, match=match):
        dm = TinyMemMath(**args)
        dm.setup()
