"""Fine-tuning mitigations: the data each method uses, the copy semantics, and that training moves the model
toward the clean continuations."""

from __future__ import annotations

import pytest
import torch

from framework.datamodules.tinymem_math import TinyMemMath
from framework.models.components.tinymem.fine_tuning import fine_tune, fine_tuning_sequences
from framework.models.components.tinymem.gpt2 import build_tinymem_gpt2
from framework.models.tinymem_lm import sequence_losses


@pytest.fixture(scope="module")
def data():
    dm = TinyMemMath(artifact="backdoor", num_main=1500, num_extra=200, num_test=50, batch_size=16)
    dm.setup()
    return dm


def test_each_method_uses_its_data(data):
    assert torch.equal(fine_tuning_sequences(data, "clean"), data.memorized_clean_sequences)
    assert torch.equal(fine_tuning_sequences(data, "extra"), data.extra_sequences)
    both = fine_tuning_sequences(data, "both")
    assert len(both) == len(data.memorized_clean_sequences) + len(data.extra_sequences)
    # no fine-tuning set contains a backdoored sequence
    bad = {tuple(r.tolist()) for r in data.memorized_sequences}
    assert not any(tuple(r.tolist()) in bad for r in both)
    with pytest.raises(ValueError, match="method"):
        fine_tuning_sequences(data, "noise")


def test_clean_fine_tuning_lowers_the_clean_loss_and_leaves_the_input_alone(data):
    model = build_tinymem_gpt2(n_layers=1, n_embd=32, n_head=4, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clean = data.memorized_clean_sequences

    def clean_loss(m):
        with torch.no_grad():
            per, count = sequence_losses(m(input_ids=clean).logits, clean)
        return ((per * count).sum() / count.sum()).item()

    result = fine_tune(model, data, method="clean", epochs=3, batch_size=16, lr=3e-3)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert result.steps == 3 * -(-len(clean) // 16) and len(result.losses) == 3
    assert clean_loss(result.model) < 0.8 * clean_loss(model)
    assert fine_tune(model, data, method="extra", epochs=1, max_steps=2).steps == 2


def test_fine_tune_from_a_checkpoint_of_another_vocabulary_is_refused(data, tmp_path):
    other = build_tinymem_gpt2(n_layers=1, n_embd=32, n_head=4, vocab_size=20)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="vocab_size: checkpoint has 20, expected 14"):
        fine_tune(tmp_path / "other", data, method="clean")
