"""Resolve a dotted sub-module path (``"backbone"``, ``"network.prior"``) of a LightningModule for the callbacks that
act on named sub-modules (``CompileModules``, ``CUDAGraphModules``), with one clear error naming the path."""

from __future__ import annotations

from torch import nn

__all__ = ["resolve_submodule"]


def resolve_submodule(pl_module: nn.Module, path: str, *, owner: str) -> nn.Module:
    """The sub-module of ``pl_module`` at dotted ``path``; ``ValueError`` prefixed with ``owner`` if it is missing or
    is not an ``nn.Module``."""
    module = pl_module
    for name in path.split("."):
        if not hasattr(module, name):
            raise ValueError(f"{owner}: {type(pl_module).__name__} has no sub-module {path!r}")
        module = getattr(module, name)
    if not isinstance(module, nn.Module):
        raise ValueError(f"{owner}: {path!r} is a {type(module).__name__}, not an nn.Module")
    return module
