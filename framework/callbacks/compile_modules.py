"""Compile chosen sub-modules of any LightningModule with ``torch.compile`` when a fit starts, from a config:

    trainer:
      callbacks:
        - class_path: framework.callbacks.compile_modules.CompileModules
          init_args: {modules: [vector_field], mode: null}

Each named module is compiled in place (``nn.Module.compile``), so parameter names and checkpoints are unchanged.
Models with their own ``compile`` argument (``SSMSequenceModel``, ``CGMGM``) do the same from their constructor.
"""

from __future__ import annotations

import lightning.pytorch as pl

from framework.callbacks.submodule_path import resolve_submodule

__all__ = ["CompileModules", "COMPILE_MODES"]

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CompileModules(pl.Callback):
    """``torch.compile`` the sub-modules ``modules`` (dotted attribute paths, e.g. ``model`` or ``vector_field``).

    Args:
        modules: attribute paths from the LightningModule; each must name an ``nn.Module``.
        mode: ``torch.compile`` mode (``None``, ``"default"``, ``"reduce-overhead"`` = CUDA graphs,
            ``"max-autotune"``, ``"max-autotune-no-cudagraphs"``).
        dynamic: ``torch.compile``'s ``dynamic`` (False: one specialised graph per input shape).
    """

    def __init__(self, *, modules: list[str], mode: str | None = None, dynamic: bool | None = False) -> None:
        super().__init__()
        if not isinstance(modules, (list, tuple)) or not modules or not all(isinstance(m, str) and m for m in modules):
            raise ValueError(f"modules must be a non-empty list of attribute paths, got {modules!r}")
        if mode is not None and mode not in COMPILE_MODES:
            raise ValueError(f"mode must be one of {list(COMPILE_MODES)} or None, got {mode!r}")
        self.modules, self.mode, self.dynamic = list(modules), mode, dynamic

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for path in self.modules:
            module = resolve_submodule(pl_module, path, owner="CompileModules")
            module.compile(mode=self.mode, dynamic=self.dynamic)
