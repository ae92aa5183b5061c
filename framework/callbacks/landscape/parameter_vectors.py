"""Flat vectors over a module's trainable parameters: ``P`` = total number of probed scalars."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ParameterSpace"]


@dataclass(frozen=True)
class ParameterSpace:
    """The probed parameters of a module (those with ``requires_grad``), in ``named_parameters`` order.

    Attributes:
        names: parameter names, as in ``module.named_parameters()``.
        shapes: their shapes.
        numels: their sizes; ``sum(numels) == dim``.
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    numels: tuple[int, ...]

    @classmethod
    def of(cls, module: torch.nn.Module) -> "ParameterSpace":
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError(f"{type(module).__name__} has no parameters with requires_grad=True to probe")
        return cls(
            names=tuple(n for n, _ in named),
            shapes=tuple(p.shape for _, p in named),
            numels=tuple(p.numel() for _, p in named),
        )

    @property
    def dim(self) -> int:
        """``P``, the number of probed scalars."""
        return sum(self.numels)

    def parameters(self, module: torch.nn.Module) -> list[torch.nn.Parameter]:
        """The live parameter tensors of ``module`` in this space's order."""
        lookup = dict(module.named_parameters())
        return [lookup[name] for name in self.names]

    def flatten(self, tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Concatenate per-parameter tensors into a vector ``[P]``."""
        return torch.cat([t.reshape(-1) for t in tensors])

    def flat_parameters(self, module: torch.nn.Module) -> torch.Tensor:
        """A detached copy ``[P]`` of the current parameter values."""
        with torch.no_grad():
            return self.flatten([p.detach() for p in self.parameters(module)]).clone()

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split ``vector`` of shape ``[P]`` (or ``[..., P]``) into ``{name: tensor [..., *shape]}`` views."""
        if vector.shape[-1] != self.dim:
            raise ValueError(f"vector has {vector.shape[-1]} entries, the parameter space has {self.dim}")
        lead = vector.shape[:-1]
        pieces = torch.split(vector, list(self.numels), dim=-1)
        return {n: piece.reshape(*lead, *shape) for n, piece, shape in zip(self.names, pieces, self.shapes)}
