"""SequentialImages (pixel order, standardisation, permutation) and ByteTextClassification (bytes, labels, padding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.datamodules.byte_text_classification import ByteTextClassification
from framework.datamodules.sequential_images import SequentialImages


def test_sequential_digits_are_row_major_pixel_sequences():
    from sklearn.datasets import load_digits

    data = SequentialImages(image_size=8, seq_len=64, batch_size=16)
    data.setup()
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (16, 64, 1) and y.shape == (16,)
    digits = load_digits()
    # Undo the standardisation of one training sequence and find it among the raw digits, row-major.
    seq, label = data.datasets["train"][0]
    all_train = data.datasets["train"].tensors[0]
    raw = seq[:, 0].numpy()
    matches = [i for i in np.flatnonzero(digits.target == int(label))
               if np.allclose(np.corrcoef(digits.images[i].reshape(-1), raw)[0, 1], 1.0, atol=1e-5)]
    assert matches, "sequence is not a row-major digit"
    assert abs(float(all_train.mean())) < 1e-4 and abs(float(all_train.std()) - 1) < 1e-2


def test_permuted_order_is_a_fixed_permutation():
    plain = SequentialImages(image_size=8, seq_len=64)
    permuted = SequentialImages(image_size=8, seq_len=64, permute=True)
    plain.setup()
    permuted.setup()
    order = permuted.pixel_order()
    assert sorted(order.tolist()) == list(range(64)) and not torch.equal(order, torch.arange(64))
    torch.testing.assert_close(permuted.datasets["train"].tensors[0], plain.datasets["train"].tensors[0][:, order])
    with pytest.raises(ValueError, match="seq_len must equal image_size"):
        SequentialImages(image_size=8, seq_len=100)


def test_byte_text_tokens_labels_and_padding(tmp_path):
    texts = {"a": ["hello world", "héllo"], "b": ["x" * 50, "yy", "zzz"]}
    for label, docs in texts.items():
        (tmp_path / label).mkdir()
        for i, doc in enumerate(docs):
            (tmp_path / label / f"{i}.txt").write_text(doc, encoding="utf-8")
    data = ByteTextClassification(text_folder=str(tmp_path), num_classes=2, seq_len=16, val_fraction=0.0,
                                  test_fraction=0.0, batch_size=5)
    data.setup()
    tokens, labels, lengths = next(iter(data.val_dataloader() if len(data.datasets["val"]) else
                                        data.make_dataloader(data.datasets["train"], shuffle=False,
                                                             collate_fn=data.split_dataloader("train").collate_fn)))
    assert tokens.shape == (5, 16) and sorted(labels.tolist()) == [0, 0, 1, 1, 1]
    decoded = {bytes((tokens[i, : lengths[i]] - 1).tolist()) for i in range(5)}
    assert "héllo".encode() in decoded and b"x" * 16 in decoded  # UTF-8 bytes, truncated to seq_len
    assert int(tokens.max()) <= 256


def test_byte_text_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="text_folder"):
        ByteTextClassification(text_folder=str(tmp_path / "missing"))
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=">= 2 class"):
        ByteTextClassification(text_folder=str(tmp_path))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "b.txt").write_text("y")
    with pytest.raises(ValueError, match="num_classes=3"):
        ByteTextClassification(text_folder=str(tmp_path), num_classes=3)
