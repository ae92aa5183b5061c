"""TextCorpus: offline English text, disjoint splits, non-overlapping windows, user files, bad input."""

from __future__ import annotations

import pytest
import torch

from framework.datamodules.text_corpus import ByteTokenizer, TextCorpus, corpus_paragraphs


def test_python_docs_windows_and_disjoint_splits(tmp_path):
    dm = TextCorpus(tokenizer="bytes", seq_len=128, batch_size=4, cache_dir=str(tmp_path))
    dm.prepare_data()
    dm.setup()
    sizes = {name: len(ds) for name, ds in dm.datasets.items()}
    assert sizes["train"] > 5 * sizes["test"] > 0 and sizes["val"] > 0
    batch = next(iter(dm.test_dataloader()))
    assert batch["input_ids"].shape == (4, 128) and batch["input_ids"].dtype == torch.int64
    text = ByteTokenizer().decode(batch["input_ids"][0].tolist())
    assert sum(c.isalpha() for c in text) > 0.6 * len(text)  # English prose, not code
    train_text = ByteTokenizer().decode(torch.cat([dm.datasets["train"][i]["input_ids"] for i in range(50)]).tolist())
    test_text = ByteTokenizer().decode(dm.datasets["test"].ids.flatten().tolist())
    # Held-out: no 200-character stretch of the test split appears in the training text.
    assert all(test_text[i : i + 200] not in train_text for i in range(0, len(test_text) - 200, 997))


def test_user_folder_and_caps(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(40):
        (folder / f"doc{i}.txt").write_text(f"Paragraph number {i} talks about gardens and rivers. " * 8)
    dm = TextCorpus(source=str(folder), tokenizer="bytes", seq_len=64, batch_size=2, cache_dir=str(tmp_path / "c"),
                    max_windows={"train": 3})
    dm.setup()
    assert len(dm.datasets["train"]) == 3
    assert len(corpus_paragraphs(str(folder))) == 40
    assert dm.vocab_size == 259


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="source"):
        TextCorpus(source=str(tmp_path / "missing.txt"), tokenizer="bytes")
    with pytest.raises(ValueError, match="seq_len"):
        TextCorpus(tokenizer="bytes", seq_len=1)
    with pytest.raises(ValueError, match="max_windows"):
        TextCorpus(tokenizer="bytes", max_windows={"calibration": 3})
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("Too short.")
    dm = TextCorpus(source=str(tiny), tokenizer="bytes", seq_len=64, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="fewer than seq_len"):
        dm.setup()
