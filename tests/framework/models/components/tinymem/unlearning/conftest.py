"""Tiny GPT-2 (Conv1D MLP) and Llama (gated Linear MLP) causal LMs and token data for the unlearning tests."""

from __future__ import annotations

import pytest
import torch

VOCAB = 14


def tiny_gpt2(seed: int = 0, n_layer: int = 2):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_layer=n_layer, n_head=2, n_embd=16, n_inner=32, n_positions=32,
                        activation_function="relu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=10, eos_token_id=11, pad_token_id=13, use_cache=False)
    return GPT2LMHeadModel(config).eval()


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64, use_cache=False,
                         bos_token_id=10, eos_token_id=11, pad_token_id=13)
    return LlamaForCausalLM(config).eval()


MODELS = {"gpt2": tiny_gpt2, "llama": tiny_llama}


@pytest.fixture(params=sorted(MODELS))
def model(request):
    return MODELS[request.param]()


@pytest.fixture
def data():
    from framework.models.components.tinymem.unlearning import UnlearningData

    generator = torch.Generator().manual_seed(0)
    memorized = torch.randint(0, VOCAB, (5, 12), generator=generator)
    clean = torch.randint(0, VOCAB, (16, 12), generator=generator)
    return UnlearningData(memorized=memorized, clean=clean, prompt_len=6)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}
