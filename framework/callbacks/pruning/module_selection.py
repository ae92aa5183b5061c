"""Which modules of a model get pruned, and which block each belongs to.

Default selection (the "network body"): every Linear / Conv1d / Conv2d / Conv3d inside the model's ``ModuleList``
blocks (decoder layers of a Transformers LLM, the layers of ``nn.Transformer``); a model without a ``ModuleList``
of prunable blocks gets all its Linear / Conv modules but the last one registered (the output head). Always left
out: a Linear whose weight is tied to an ``nn.Embedding`` (tied LM heads), and the ``out_proj`` of
``nn.MultiheadAttention`` (attention reads ``out_proj.weight`` directly, bypassing the module's forward pre-hook
that re-applies a pruning mask, so masks would go stale during fine-tuning). ``include`` / ``exclude`` regular
expressions (``re.search`` on the module name) override the default.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

__all__ = ["PRUNABLE_TYPES", "NoPrunableModuleError", "select_prunable_modules", "find_block_lists", "block_ids"]

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class NoPrunableModuleError(ValueError):
    """The selection matched no Linear / Conv module."""


def _candidates(model: nn.Module) -> dict[str, nn.Module]:
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    attention_out = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    return {
        name: module for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES) and id(module) not in attention_out
        and id(module.weight) not in embedding_weights
        and not (hasattr(module, "weight_orig") and id(module.weight_orig) in embedding_weights)
    }


def find_block_lists(model: nn.Module, names: Sequence[str] | None = None) -> list[tuple[str, nn.ModuleList]]:
    """``ModuleList``s (name, list) whose children hold prunable modules — the model's repeated blocks.

    Nested lists are skipped (only the outermost list of a branch counts). ``names`` restricts the search to lists
    containing at least one of these module names.
    """
    candidates = list(_candidates(model)) if names is None else list(names)
    lists = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 1:
            continue
        if any(name.startswith(outer + ".") for outer, _ in lists):
            continue
        prefix = f"{name}." if name else ""
        if any(c.startswith(prefix) for c in candidates):
            lists.append((name, module))
    return lists


def select_prunable_modules(
    model: nn.Module, *, include: Sequence[str] | None = None, exclude: Sequence[str] | None = None
) -> dict[str, nn.Module]:
    """Name → module of every module to prune (see the module docstring for the default rule)."""
    candidates = _candidates(model)
    if include:
        patterns = [re.compile(p) for p in include]
        selected = {n: m for n, m in candidates.items() if any(p.search(n) for p in patterns)}
    else:
        lists = find_block_lists(model)
        if lists:
            prefixes = tuple(f"{name}." for name, _ in lists)
            selected = {n: m for n, m in candidates.items() if n.startswith(prefixes)}
        else:
            names = list(candidates)
            selected = {n: candidates[n] for n in names[:-1]}
    if exclude:
        patterns = [re.compile(p) for p in exclude]
        selected = {n: m for n, m in selected.items() if not any(p.search(n) for p in patterns)}
    if not selected:
        found = list(candidates)
        raise NoPrunableModuleError(
            f"no prunable module selected (include={list(include or [])}, exclude={list(exclude or [])}); "
            f"Linear/Conv modules found: {found[:10]}{' ...' if len(found) > 10 else ''}"
            + (" — the default leaves out the output head, so a model with a single Linear has nothing to prune; "
               "pass include=[...] to choose modules" if len(found) <= 1 else "")
        )
    return selected


def block_ids(names: Sequence[str], model: nn.Module) -> dict[str, int]:
    """Block id of each module name: children of the model's ModuleLists number the blocks (consecutively over
    several lists); a module outside every list is its own block."""
    lists = find_block_lists(model, names)
    ids: dict[str, int] = {}
    next_id = 0
    for list_name, module_list in lists:
        prefix = f"{list_name}." if list_name else ""
        for index in range(len(module_list)):
            child_prefix = f"{prefix}{index}."
            members = [n for n in names if n.startswith(child_prefix)]
            if members:
                for n in members:
                    ids[n] = next_id
                next_id += 1
    for n in names:
        if n not in ids:
            ids[n] = next_id
            next_id += 1
    return ids
