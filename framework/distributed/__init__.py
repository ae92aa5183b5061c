"""Scaling out through Lightning's own strategies: FSDP wrapping for Transformers LMs and strategy checks for
callbacks (see README "Scaling out" and docs/framework.md)."""

from framework.distributed.callback_strategies import check_callback_strategies, strategy_name
from framework.distributed.transformer_fsdp import TransformerBlockFSDPStrategy, transformer_block_classes

__all__ = ["TransformerBlockFSDPStrategy", "check_callback_strategies", "strategy_name", "transformer_block_classes"]
