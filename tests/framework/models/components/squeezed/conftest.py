"""Shared fixtures: a tiny random GQA Llama and an index over a short random context."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from framework.models.components.squeezed import FixedContextIndex, SqueezedAttention


def tiny_llama(attn_implementation: str = "squeezed", *, layers: int = 2, seed: int = 0) -> LlamaForCausalLM:
    """4 query heads / 2 KV heads (GQA), head dim 16."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    model = LlamaForCausalLM(cfg).eval()
    model.set_attn_implementation(attn_implementation)
    return model


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return tiny_llama()


@pytest.fixture(scope="module")
def context() -> torch.Tensor:
    return torch.randint(3, 300, (1, 160), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def build_settings() -> SqueezedAttention:
    return SqueezedAttention(observation_window=16, attention_sinks=2, centroid_fraction=0.1, kmeans_iters=8)


@pytest.fixture(scope="module")
def index(model, context, build_settings) -> FixedContextIndex:
    return FixedContextIndex.build(model, context, attention=build_settings)
