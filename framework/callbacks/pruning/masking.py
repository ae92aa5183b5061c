"""Masks through ``torch.nn.utils.prune``: ``weight_orig`` (trained) + ``weight_mask`` (buffer) + a pre-hook.

Fine-tuning updates ``weight_orig`` while the forward always sees ``weight_orig * weight_mask``, and both tensors are
in the ``state_dict``, so checkpoints hold the masks. :func:`restore_pruning_state` re-creates the
reparametrisation on a fresh model before such a state dict is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.nn.utils import prune

__all__ = ["keep_parameter_order", "is_pruned", "apply_mask", "mask_sparsity", "make_permanent", "restore_pruning_state", "pruned_modules"]


def keep_parameter_order(module: nn.Module) -> None:
    """Move ``weight_orig`` to the slot ``weight`` had (torch.prune appends it after ``bias``).

    Optimizer state is saved by parameter index: a model pruned after its optimizer was built (order weight, bias)
    and the same model rebuilt on resume (reparametrised before the optimizer exists) must list parameters in the
    same order, or Adam's moments land on the wrong tensors.
    """
    params = module._parameters
    if "weight_orig" not in params or next(iter(params)) == "weight_orig":
        return
    reordered = {"weight_orig": params["weight_orig"], **{k: v for k, v in params.items() if k != "weight_orig"}}
    params.clear()
    params.update(reordered)


def is_pruned(module: nn.Module, name: str = "weight") -> bool:
    return hasattr(module, f"{name}_mask") and hasattr(module, f"{name}_orig")


def apply_mask(module: nn.Module, keep: torch.Tensor, new_weight: torch.Tensor | None = None) -> None:
    """Prune ``module.weight`` with the keep-mask ``keep`` (True = kept; shaped like the weight).

    A module pruned before gets the intersection of old and new masks. ``new_weight`` (e.g. SparseGPT's
    reconstruction) replaces the trained values first.
    """
    if keep.shape != module.weight.shape:
        raise ValueError(f"mask shape {tuple(keep.shape)} does not match weight {tuple(module.weight.shape)}")
    keep = keep.to(device=module.weight.device)
    with torch.no_grad():
        if is_pruned(module):
            if new_weight is not None:
                module.weight_orig.copy_(new_weight)
            module.weight_mask.mul_(keep.to(module.weight_mask.dtype))
            module.weight = module.weight_orig * module.weight_mask
            return
        if new_weight is not None:
            module.weight.copy_(new_weight)
    prune.custom_from_mask(module, "weight", keep.to(module.weight.dtype))
    keep_parameter_order(module)


def mask_sparsity(module: nn.Module) -> float:
    """Fraction of zero entries of the effective weight mask (0 for an unpruned module)."""
    if not is_pruned(module):
        return 0.0
    mask = module.weight_mask
    return float((mask == 0).sum()) / mask.numel()


def pruned_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if is_pruned(m)}


def make_permanent(model: nn.Module) -> list[str]:
    """Fold every mask into its weight (``prune.remove``); returns the module names."""
    names = []
    for name, module in pruned_modules(model).items():
        prune.remove(module, "weight")
        names.append(name)
    return names


def restore_pruning_state(model: nn.Module, state_dict_keys: Iterable[str] | Mapping[str, object]) -> list[str]:
    """Re-create the pruning reparametrisation (identity masks) of every module whose ``<name>.weight_mask`` is in
    ``state_dict_keys`` so that the state dict loads; returns the module names."""
    modules = dict(model.named_modules())
    restored = []
    for key in state_dict_keys:
        if not key.endswith(".weight_mask"):
            continue
        name = key[: -len(".weight_mask")]
        module = modules.get(name)
        if module is None or is_pruned(module):
            continue
        prune.identity(module, "weight")
        keep_parameter_order(module)
        restored.append(name)
    return restored
