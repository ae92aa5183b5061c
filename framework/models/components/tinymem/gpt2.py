"""The TinyMem GPT-2: Transformers' ``GPT2LMHeadModel`` configured as in the paper, and loading it from checkpoints.

Architecture (Sakarvadia et al. 2025, TinyMem): ``n_layers`` ∈ {1, 2, 4, 8, 16} blocks of width 128 with 4 heads
(MLP inner width 4·128 = 512), ReLU MLPs, every dropout 0, context 150, vocabulary 14 (math) or a tokenizer's
vocabulary (language), weights initialised N(0, 0.8/√d_model) (``initializer_range``; Transformers additionally
scales the residual projections by 1/√(2·n_layers), as for every GPT-2).

Token ids of the math vocabulary: digits 0-9 → 0-9, BOS ``^`` → 10, EOS ``$`` → 11, space → 12, PAD → 13.

Checkpoints: :func:`load_tinymem_gpt2` reads a Lightning checkpoint written by ``framework.models.tinymem_lm.TinyMemLM``
(``state_dict`` keys ``model.*``), a plain ``torch.save`` of a GPT-2 ``state_dict``, or a Transformers
``save_pretrained`` folder, and raises ``ValueError`` naming every mismatch when the checkpoint's vocabulary or
architecture differs from what the caller expects.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from framework.validation import require_existing_path

__all__ = [
    "MATH_VOCAB_SIZE",
    "BOS_ID",
    "EOS_ID",
    "SPACE_ID",
    "PAD_ID",
    "ARCHITECTURE_KEYS",
    "tinymem_gpt2_config",
    "build_tinymem_gpt2",
    "architecture_of",
    "check_architecture",
    "load_tinymem_gpt2",
]

MATH_VOCAB_SIZE = 14
BOS_ID, EOS_ID, SPACE_ID, PAD_ID = 10, 11, 12, 13
# The config fields that must agree between a checkpoint and the model it is loaded into.
ARCHITECTURE_KEYS = ("vocab_size", "n_layer", "n_embd", "n_head", "n_inner", "n_positions", "activation_function")


def _require_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def tinymem_gpt2_config(
    *,
    n_layers: int,
    vocab_size: int = MATH_VOCAB_SIZE,
    context_length: int = 150,
    n_embd: int = 128,
    n_head: int = 4,
    activation: str = "relu",
    initializer_range: float | None = None,
    bos_token_id: int = BOS_ID,
    eos_token_id: int = EOS_ID,
    pad_token_id: int = PAD_ID,
) -> GPT2Config:
    """The ``GPT2Config`` of a TinyMem model (all dropouts 0; ``initializer_range`` default 0.8/√n_embd)."""
    _require_int("n_layers", n_layers, 1)
    _require_int("vocab_size", vocab_size, 2)
    _require_int("context_length", context_length, 2)
    _require_int("n_embd", n_embd, 1)
    _require_int("n_head", n_head, 1)
    if n_embd % n_head:
        raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
    for name, token in (("bos_token_id", bos_token_id), ("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
        if not isinstance(token, int) or not 0 <= token < vocab_size:
            raise ValueError(f"{name} must be a token id in [0, vocab_size={vocab_size}), got {token!r}")
    if initializer_range is None:
        initializer_range = 0.8 / math.sqrt(n_embd)
    if not initializer_range > 0:
        raise ValueError(f"initializer_range must be positive, got {initializer_range!r}")
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=context_length,
        n_embd=n_embd,
        n_layer=n_layers,
        n_head=n_head,
        n_inner=4 * n_embd,
        activation_function=activation,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=float(initializer_range),
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        use_cache=False,
    )


def build_tinymem_gpt2(*, n_layers: int, vocab_size: int = MATH_VOCAB_SIZE, context_length: int = 150,
                       n_embd: int = 128, n_head: int = 4, activation: str = "relu",
                       initializer_range: float | None = None, bos_token_id: int = BOS_ID,
                       eos_token_id: int = EOS_ID, pad_token_id: int = PAD_ID, seed: int | None = None
                       ) -> GPT2LMHeadModel:
    """A freshly initialised TinyMem ``GPT2LMHeadModel`` (see the module docstring); ``seed`` fixes the init."""
    config = tinymem_gpt2_config(
        n_layers=n_layers, vocab_size=vocab_size, context_length=context_length, n_embd=n_embd, n_head=n_head,
        activation=activation, initializer_range=initializer_range, bos_token_id=bos_token_id,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )
    if seed is None:
        return GPT2LMHeadModel(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)


def architecture_of(config: GPT2Config | dict) -> dict[str, Any]:
    """The architecture-defining fields (``ARCHITECTURE_KEYS``) of a config; ``n_inner`` None means 4·n_embd."""
    values = config.to_dict() if isinstance(config, GPT2Config) else dict(config)
    arch = {key: values.get(key) for key in ARCHITECTURE_KEYS}
    if arch["n_inner"] is None and arch["n_embd"] is not None:
        arch["n_inner"] = 4 * arch["n_embd"]
    return arch


def check_architecture(found: GPT2Config | dict, expected: GPT2Config | dict, *, source: str = "checkpoint") -> None:
    """Raise ``ValueError`` listing every architecture field where ``found`` differs from ``expected`` (fields
    unknown on either side are not compared)."""
    have, want = architecture_of(found), architecture_of(expected)
    diffs = [f"{k}: checkpoint has {have[k]!r}, expected {want[k]!r}" for k in ARCHITECTURE_KEYS
             if want[k] is not None and have[k] is not None and have[k] != want[k]]
    if diffs:
        raise ValueError(f"{source} is a model of another vocabulary or architecture: " + "; ".join(diffs))


def _gpt2_state_dict(raw: dict, source: str) -> tuple[dict[str, torch.Tensor], dict | None]:
    """``(state_dict of the GPT2LMHeadModel, stored GPT2 config dict or None)`` from a loaded checkpoint object."""
    if "state_dict" in raw:  # Lightning checkpoint of TinyMemLM
        state = {k.removeprefix("model."): v for k, v in raw["state_dict"].items() if k.startswith("model.")}
        if not state:
            raise ValueError(f"{source} is a Lightning checkpoint without 'model.*' weights (not a TinyMemLM)")
        config = raw.get("tinymem_gpt2_config")
        return state, config
    if all(isinstance(v, torch.Tensor) for v in raw.values()):
        return dict(raw), None
    raise ValueError(f"{source} holds neither a Lightning checkpoint nor a GPT-2 state_dict")


def _architecture_from_state(state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    if "transformer.wte.weight" not in state:
        raise ValueError(f"{source} is not a GPT-2 language model (no transformer.wte.weight)")
    vocab, n_embd = state["transformer.wte.weight"].shape
    n_positions = state["transformer.wpe.weight"].shape[0]
    layers = {int(k.split(".")[2]) for k in state if k.startswith("transformer.h.")}
    n_inner = state["transformer.h.0.mlp.c_fc.weight"].shape[1] if layers else None
    return {"vocab_size": int(vocab), "n_embd": int(n_embd), "n_positions": int(n_positions),
            "n_layer": len(layers), "n_inner": None if n_inner is None else int(n_inner)}


def load_tinymem_gpt2(path: str | Path, *, expected: GPT2Config | dict | None = None,
                      map_location: str | torch.device = "cpu") -> GPT2LMHeadModel:
    """Load a TinyMem GPT-2 from ``path`` (Lightning ``.ckpt``, ``state_dict`` file, or ``save_pretrained`` folder).

    Args:
        path: the checkpoint.
        expected: the architecture the caller needs (a ``GPT2Config`` or a dict of ``ARCHITECTURE_KEYS``; missing
            keys are not checked). A mismatch raises ``ValueError`` naming each differing field.
        map_location: device of the loaded tensors.

    Returns:
        the model in eval mode.
    """
    path = require_existing_path("checkpoint", path)
    source = f"checkpoint {str(path)!r}"
    if path.is_dir():
        model = GPT2LMHeadModel.from_pretrained(str(path))
        if expected is not None:
            check_architecture(model.config, expected, source=source)
        return model.to(map_location).eval()
    raw = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(raw, dict):
        raise ValueError(f"{source} holds a {type(raw).__name__}, not a checkpoint dict")
    state, config_dict = _gpt2_state_dict(raw, source)
    inferred = _architecture_from_state(state, source)
    if config_dict is not None:
        config = GPT2Config.from_dict(config_dict)
        check_architecture(inferred, config, source=source)  # stored config and stored weights must agree
    else:
        if expected is None:
            raise ValueError(f"{source} stores no GPT-2 config; pass expected=GPT2Config(...) to load it")
        config = expected if isinstance(expected, GPT2Config) else tinymem_gpt2_config(
            n_layers=inferred["n_layer"], vocab_size=inferred["vocab_size"], context_length=inferred["n_positions"],
            n_embd=inferred["n_embd"], n_head=int(expected.get("n_head", 4)),
        )
    if expected is not None:
        check_architecture(config, expected, source=source)
        check_architecture(inferred, expected, source=source)
    model = GPT2LMHeadModel(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # The causal-mask buffers ("attn.bias", "attn.masked_bias") are not parameters; older files may carry them.
    missing = [k for k in missing if not k.endswith(("attn.bias", "attn.masked_bias"))]
    unexpected = [k for k in unexpected if not k.endswith(("attn.bias", "attn.masked_bias"))]
    if missing or unexpected:
        raise ValueError(f"{source} does not match the GPT-2 architecture: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model.to(map_location).eval()
