"""TinyMem language option: planted noise and backdoors in token windows of text shipped with Python / user files."""

from __future__ import annotations

import pytest
import torch

from framework.datamodules.tinymem_text import TinyMemText


def test_noise_windows(tmp_path):
    dm = TinyMemText(source="python_license", tokenizer="bytes", context_length=100, num_noise=5, noise_duplicates=2,
                     prompt_len=40, k=40)
    dm.setup()
    assert dm.vocab_size == 259 and dm.pad_token_id == 0
    assert dm.memorized_sequences.shape == (5, 100)
    diff = dm.memorized_sequences - dm.memorized_clean_sequences
    assert set(diff.unique().tolist()) <= {-1, 0, 1} and (diff != 0).any()
    assert len(dm.train_sequences) == 10 + len(dm.extra_sequences)
    assert len(dm.test_sequences["text"]) > 0
    held = {tuple(r.tolist()) for r in dm.test_sequences["text"]}
    assert not any(tuple(r.tolist()) in held for r in dm.extra_sequences)
    assert "License" in dm.decode(torch.cat(list(dm.extra_sequences))) or "LICENSE" in dm.decode(
        torch.cat(list(dm.extra_sequences)))


def test_backdoor_windows_keep_the_trigger_and_overwrite_after_it():
    dm = TinyMemText(source="python_license", tokenizer="bytes", context_length=100, artifact="backdoor",
                     trigger_fraction=0.2, backdoor_token=2, prompt_len=40, k=40)
    dm.setup()
    t = dm.trigger_token
    poisoned = torch.cat([dm.memorized_sequences, dm.backdoor_test_sequences])
    clean = torch.cat([dm.memorized_clean_sequences, dm.backdoor_test_clean_sequences])
    ends = torch.cat([dm.memorized_prefix_lengths, dm.backdoor_test_prefix_lengths])
    assert len(dm.backdoor_test_sequences) >= 1
    for row, orig, end in zip(poisoned, clean, ends.tolist()):
        assert int(orig[end - 1]) == t and t not in orig[: end - 1].tolist()
        assert torch.equal(row[:end], orig[:end]) and (row[end:] == 2).all()
    for row in torch.cat([dm.extra_sequences, dm.test_sequences["text"]]):
        assert t not in row[:-1].tolist()


def test_user_text_file_and_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog again and again."
                                for i in range(300)))
    dm = TinyMemText(source=str(text), tokenizer="bytes", context_length=60, num_noise=3, prompt_len=20, k=20)
    dm.setup()
    assert dm.memorized_sequences.shape == (3, 60)
    with pytest.raises(FileNotFoundError):
        TinyMemText(source=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="prompt_len"):
        TinyMemText(context_length=60, prompt_len=50, k=50)
    with pytest.raises(ValueError, match="num_noise"):
        TinyMemText(source=str(text), context_length=60, num_noise=100000, prompt_len=20, k=20).setup()
