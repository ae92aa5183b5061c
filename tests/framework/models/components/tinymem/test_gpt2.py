"""The TinyMem GPT-2: the paper's configuration, initialisation, and checkpoint loading with architecture checks."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2LMHeadModel

from framework.models.components.tinymem.gpt2 import (
    build_tinymem_gpt2,
    check_architecture,
    load_tinymem_gpt2,
    tinymem_gpt2_config,
)


@pytest.mark.parametrize("n_layers", [2, 4])
def test_config_matches_the_paper(n_layers):
    model = build_tinymem_gpt2(n_layers=n_layers)
    c = model.config
    assert (c.n_layer, c.n_embd, c.n_head, c.n_positions, c.vocab_size) == (n_layers, 128, 4, 150, 14)
    assert c.activation_function == "relu" and c.resid_pdrop == c.embd_pdrop == c.attn_pdrop == 0.0
    assert c.initializer_range == pytest.approx(0.8 / math.sqrt(128))
    assert (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (10, 11, 13)
    assert model.transformer.h[0].mlp.c_fc.weight.shape == (128, 512)
    assert isinstance(model.transformer.h[0].mlp.act, torch.nn.ReLU)
    # init: N(0, 0.0707) for embeddings and c_fc; residual projections scaled by 1/sqrt(2 n_layers)
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.0707, rel=0.1)
    assert model.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.0707, rel=0.05)
    assert model.transformer.h[0].mlp.c_proj.weight.std().item() == pytest.approx(
        0.0707 / math.sqrt(2 * n_layers), rel=0.05)


def test_seeded_build_is_reproducible():
    a = build_tinymem_gpt2(n_layers=1, seed=3)
    b = build_tinymem_gpt2(n_layers=1, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_layers=0), "n_layers"),
    (dict(n_layers=2, n_embd=130, n_head=4), "divisible"),
    (dict(n_layers=2, vocab_size=12), "token id"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tinymem_gpt2_config(**kwargs)


def test_load_state_dict_pretrained_dir_and_mismatch(tmp_path):
    model = build_tinymem_gpt2(n_layers=2, seed=0)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="stores no GPT-2 config"):
        load_tinymem_gpt2(path)
    loaded = load_tinymem_gpt2(path, expected=model.config)
    assert all(torch.equal(x, y) for x, y in zip(model.parameters(), loaded.parameters()))
    with pytest.raises(ValueError, match=r"n_layer: checkpoint has 2, expected 4"):
        load_tinymem_gpt2(path, expected=tinymem_gpt2_config(n_layers=4))
    model.save_pretrained(tmp_path / "hf")
    assert isinstance(load_tinymem_gpt2(tmp_path / "hf"), GPT2LMHeadModel)
    with pytest.raises(ValueError, match=r"vocab_size: checkpoint has 14, expected 50257"):
        load_tinymem_gpt2(tmp_path / "hf", expected={"vocab_size": 50257})
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_tinymem_gpt2(tmp_path / "missing.ckpt")


def test_check_architecture_lists_every_difference():
    with pytest.raises(ValueError) as info:
        check_architecture(tinymem_gpt2_config(n_layers=2, vocab_size=20), tinymem_gpt2_config(n_layers=4))
    assert "vocab_size" in str(info.value) and "n_layer" in str(info.value)
