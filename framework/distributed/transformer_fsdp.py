"""FSDP for the project's Transformers-based language models (TinyMem's GPT-2, SmolLM2 / Llama fine-tuning).

``TransformerBlockFSDPStrategy`` is Lightning's ``FSDPStrategy`` whose wrapping policy defaults to the decoder-block
classes the Transformers models themselves declare unsplittable (``PreTrainedModel._no_split_modules``, e.g.
``GPT2Block``, ``LlamaDecoderLayer``): each block becomes one FSDP unit, embeddings and head stay in the root unit.
A model with no such blocks is refused with a clear error before training (pass ``auto_wrap_policy`` explicitly, or
use DDP). In YAML::

    trainer:
      strategy: {class_path: framework.distributed.TransformerBlockFSDPStrategy, init_args: {sharding_strategy: FULL_SHARD}}
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

__all__ = ["TransformerBlockFSDPStrategy", "transformer_block_classes"]


def transformer_block_classes(module: nn.Module) -> set[type[nn.Module]]:
    """Classes of the sub-modules named in the ``_no_split_modules`` of every Transformers model inside ``module``."""
    names: set[str] = set()
    for sub in module.modules():
        declared = getattr(type(sub), "_no_split_modules", None) or getattr(sub, "_no_split_modules", None)
        if declared:
            names.update(declared)
    return {type(sub) for sub in module.modules() if type(sub).__name__ in names}


class TransformerBlockFSDPStrategy(FSDPStrategy):
    """``FSDPStrategy`` wrapping every Transformers decoder block unless ``auto_wrap_policy`` is given."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._explicit_policy = kwargs.get("auto_wrap_policy") is not None

    def _setup_model(self, model: nn.Module) -> nn.Module:
        if not self._explicit_policy and "auto_wrap_policy" not in self.kwargs:
            self.kwargs["auto_wrap_policy"] = default_wrap_policy(model)
        return super()._setup_model(model)


def default_wrap_policy(model: nn.Module):
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    blocks = transformer_block_classes(model)
    if not blocks:
        raise ValueError(
            f"FSDP has no layers to wrap in {type(model).__name__}: it holds no Transformers model declaring "
            "decoder blocks (_no_split_modules); pass trainer.strategy.init_args.auto_wrap_policy (a set of module "
            "classes) or use trainer.strategy=ddp"
        )
    return ModuleWrapPolicy(blocks)
