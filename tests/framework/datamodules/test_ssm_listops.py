"""ListOps: labels agree with an independent stack evaluation of the token sequence; lengths, uniqueness, batches."""

from __future__ import annotations

import numpy as np
import pytest

from framework.datamodules.listops import TOKENS, ListOps, generate_listops


def _stack_evaluate(ids: list[int]) -> int:
    """Evaluate a token sequence left to right with a stack (independent of the generator's tree)."""
    stack: list = []
    for token in (TOKENS[i] for i in ids):
        if token.startswith("["):
            stack.append([token])
        elif token == "]":
            operator, *values = stack.pop()
            if operator == "[MIN":
                result = min(values)
            elif operator == "[MAX":
                result = max(values)
            elif operator == "[MED":
                ordered = sorted(values)
                mid = len(ordered) // 2
                result = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) // 2
            else:
                result = sum(values) % 10
            if not stack:
                return result
            stack[-1].append(result)
        else:
            stack[-1].append(int(token))
    raise AssertionError("unbalanced sequence")


def test_generated_trees_are_valid_distinct_and_labelled_correctly():
    data = generate_listops(num_samples=300, max_depth=6, max_args=5, min_length=20, max_length=120, seq_len=128,
                            seed=3)
    tokens, lengths, labels = data["tokens"], data["length"], data["label"]
    assert (lengths > 20).all() and (lengths < 120).all()
    assert len({tokens[i, : lengths[i]].tobytes() for i in range(300)}) == 300
    for i in range(300):
        ids = tokens[i, : lengths[i]].tolist()
        assert (tokens[i, lengths[i]:] == 0).all()
        assert TOKENS[ids[0]].startswith("[") and TOKENS[ids[-1]] == "]"
        assert _stack_evaluate(ids) == labels[i]
    assert len(np.unique(labels)) == 10


def test_datamodule_batches_are_padded_per_batch_with_lengths():
    dm = ListOps(num_train=20, num_val=6, num_test=6, max_depth=5, min_length=10, max_length=60, seq_len=64,
                 batch_size=4)
    dm.prepare_data()
    dm.setup()
    tokens, labels, lengths = next(iter(dm.val_dataloader()))
    assert tokens.shape[0] == 4 and tokens.shape[1] == int(lengths.max()) and labels.shape == (4,)
    assert tokens.dtype.is_floating_point is False and int(tokens.max()) < dm.vocab_size
    padded = ListOps(num_train=20, num_val=6, num_test=6, max_depth=5, min_length=10, max_length=60, seq_len=64,
                     batch_size=4, pad_to_seq_len=True)
    padded.setup()
    assert next(iter(padded.train_dataloader()))[0].shape == (4, 64)


@pytest.mark.parametrize("kwargs, message", [
    (dict(seq_len=100, max_length=2000), "seq_len=100 must be >= max_length - 1"),
    (dict(min_length=50, max_length=40, seq_len=64), "min_length"),
    (dict(max_args=1), "max_args"),
    (dict(num_classes=5), "10 classes"),
])
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ListOps(**kwargs)


def test_early_rejection_keeps_the_distribution_of_kept_trees():
    # Rejecting a tree as soon as it reaches max_length must not change which trees are kept: compare the kept trees'
    # length distribution with plain rejection sampling of fully grown trees (two-sample KS test).
    import random

    from scipy.stats import ks_2samp

    from framework.datamodules.listops import _random_tree

    def plain(seed, n):
        rng, out = random.Random(seed), []
        while len(out) < n:
            _, length = _random_tree(rng, 1, 6, 5)
            if 20 < length < 120:
                out.append(length)
        return np.array(out)

    fast = generate_listops(num_samples=1500, max_depth=6, max_args=5, min_length=20, max_length=120, seq_len=128,
                            seed=11)["length"]
    assert ks_2samp(plain(5, 1500), fast).pvalue > 1e-3


def test_generation_does_not_depend_on_the_number_of_processes():
    kwargs = dict(num_samples=300, max_depth=6, max_args=5, min_length=20, max_length=120, seq_len=128, seed=4)
    one = generate_listops(processes=1, **kwargs)
    two = generate_listops(processes=2, **kwargs)
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])
