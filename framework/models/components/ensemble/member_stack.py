"""M members of one architecture run together: stacked weights + ``vmap(functional_call)``, or a plain loop.

``StackedMembers`` keeps every parameter and buffer of the M members as one tensor with a leading member dimension
(``torch.func.stack_module_state``) and evaluates all members in one vectorized call (``torch.func.vmap`` over
``torch.func.functional_call``): one grouped kernel per layer instead of M small ones. Because the loss of the
ensemble is the *sum* of the members' losses and elementwise optimizers (SGD, Adam, AdamW, ...) treat every entry
independently, training the stack is training M independent models (the tests check this against separately
trained members). ``LoopedMembers`` is the fallback for modules ``vmap`` cannot batch.

Shapes: input ``[B, ...]`` (shared by all members) -> output ``[M, B, ...]``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

__all__ = ["StackedMembers", "LoopedMembers", "seeded_member_copies", "load_member_weights"]

_SEPARATOR = "__"
_RANDOMNESS = ("different", "same", "error")


def seeded_member_copies(member: nn.Module, seeds: Sequence[int]) -> list[nn.Module]:
    """One copy of ``member`` per seed, each re-initialised by ``reset_parameters()`` under ``torch.manual_seed(seed)``.

    Every sub-module that defines ``reset_parameters`` (all of torch's layers do) is reset in module order, so the copy
    for seed ``s`` equals ``member`` re-initialised after ``torch.manual_seed(s)``. The global RNG is left untouched.
    Parameters owned by modules without ``reset_parameters`` keep ``member``'s values (a warning lists them).
    """
    if len(seeds) < 1:
        raise ValueError("seeds must name at least one seed")
    uncovered = [
        f"{module_name}.{param_name}".lstrip(".")
        for module_name, module in member.named_modules()
        if not callable(getattr(module, "reset_parameters", None))
        for param_name, _ in module.named_parameters(recurse=False)
    ]
    if uncovered:
        warnings.warn(
            f"member parameters {uncovered} belong to modules without reset_parameters(); every ensemble member "
            "starts from the same values for them",
            UserWarning,
            stacklevel=2,
        )
    copies = []
    for seed in seeds:
        clone = copy.deepcopy(member)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            for module in clone.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
        copies.append(clone)
    return copies


def load_member_weights(member: nn.Module, path: str | Path) -> nn.Module:
    """A copy of ``member`` with the weights stored at ``path``.

    ``path`` may hold a Lightning checkpoint (``{"state_dict": ...}``, e.g. of a LightningModule that wraps the
    member as ``self.net``) or a plain ``state_dict``. Keys are matched exactly, or after removing the one common
    prefix (``"model."``, ``"net."``, ...) under which the member's keys all appear.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"member checkpoint must be an existing file, got {str(path)!r}")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} holds neither a Lightning checkpoint nor a state_dict")
    wanted = set(member.state_dict())
    candidates = [""] + sorted({k[: k.index(w)] for k in state for w in wanted if k.endswith("." + w) or k == w})
    for prefix in candidates:
        picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix):] in wanted}
        if set(picked) == wanted:
            clone = copy.deepcopy(member)
            clone.load_state_dict(picked)
            return clone
    missing = sorted(wanted - {k.split(".", 1)[-1] for k in state})[:5]
    raise ValueError(
        f"checkpoint {str(path)!r} does not contain the member's weights (looked for keys like {missing} under any "
        f"prefix; the checkpoint has {len(state)} tensors, e.g. {sorted(state)[:3]})"
    )


class StackedMembers(nn.Module):
    """Members of one architecture with stacked weights, evaluated with ``vmap(functional_call)``.

    Args:
        members: M >= 1 modules with identical parameter / buffer names and shapes.
        randomness: ``vmap`` randomness for dropout and other random ops: ``"different"`` (independent per member,
            the default), ``"same"`` or ``"error"``.
        chunk_size: evaluate this many members at a time (memory knob; ``None`` = all at once).
    """

    def __init__(self, members: Sequence[nn.Module], *, randomness: str = "different",
                 chunk_size: int | None = None) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("StackedMembers needs at least one member")
        if randomness not in _RANDOMNESS:
            raise ValueError(f"randomness must be one of {list(_RANDOMNESS)}, got {randomness!r}")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        reference = [(k, tuple(v.shape)) for k, v in members[0].state_dict().items()]
        for i, member in enumerate(members[1:], start=1):
            shapes = [(k, tuple(v.shape)) for k, v in member.state_dict().items()]
            if shapes != reference:
                raise ValueError(f"member {i} differs in architecture from member 0; StackedMembers needs identical "
                                 "members (use LoopedMembers for mixed architectures)")
        params, buffers = stack_module_state(list(members))
        self._param_names = list(params)
        self._buffer_names = list(buffers)
        for name in self._param_names + self._buffer_names:
            if _SEPARATOR in name:
                raise ValueError(f"member tensor name {name!r} contains {_SEPARATOR!r}, which StackedMembers reserves")
        for name, value in params.items():
            self.register_parameter(name.replace(".", _SEPARATOR), nn.Parameter(value.detach().clone()))
        for name, value in buffers.items():
            self.register_buffer(name.replace(".", _SEPARATOR), value.detach().clone())
        # The template holds no data (meta device) and is not a sub-module: functional_call swaps the stacked
        # slices in, so there is exactly one copy of the weights, and .to()/state_dict() see only the stack.
        template = copy.deepcopy(members[0]).to("meta")
        object.__setattr__(self, "_template", template)
        self.num_members = len(members)
        self.randomness = randomness
        self.chunk_size = chunk_size

    def train(self, mode: bool = True) -> StackedMembers:
        super().train(mode)
        self._template.train(mode)
        return self

    def stacked_parameters(self) -> dict[str, Tensor]:
        """``{member parameter name: [M, ...] tensor}``."""
        return {n: getattr(self, n.replace(".", _SEPARATOR)) for n in self._param_names}

    def stacked_buffers(self) -> dict[str, Tensor]:
        """``{member buffer name: [M, ...] tensor}``."""
        return {n: getattr(self, n.replace(".", _SEPARATOR)) for n in self._buffer_names}

    def _call_one(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self._template, (params, buffers), (x,))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, ...] -> [M, B, ...]``."""
        return vmap(self._call_one, in_dims=(0, 0, None), randomness=self.randomness, chunk_size=self.chunk_size)(
            self.stacked_parameters(), self.stacked_buffers(), x
        )

    def member_state_dict(self, index: int) -> dict[str, Tensor]:
        """The ``state_dict`` of member ``index`` (detached copies), loadable into the member architecture."""
        if not 0 <= index < self.num_members:
            raise ValueError(f"member index must lie in [0, {self.num_members}), got {index}")
        tensors = {**self.stacked_parameters(), **self.stacked_buffers()}
        return {name: tensors[name][index].detach().clone() for name in self._template.state_dict()}

    def member(self, index: int) -> nn.Module:
        """A standalone module holding member ``index``'s weights (on the stack's device)."""
        state = self.member_state_dict(index)
        device = next(iter(state.values())).device
        module = copy.deepcopy(self._template).to_empty(device=device)
        module.load_state_dict(state)
        return module.train(self.training)


class LoopedMembers(nn.Module):
    """Members kept as an ``nn.ModuleList`` and run one after another (any architectures, any ops).

    Shapes: ``[B, ...] -> [M, B, ...]`` (members must produce outputs of equal shape).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("LoopedMembers needs at least one member")
        self.members = nn.ModuleList(members)
        self.num_members = len(members)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([member(x) for member in self.members])

    def member_state_dict(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < self.num_members:
            raise ValueError(f"member index must lie in [0, {self.num_members}), got {index}")
        return {k: v.detach().clone() for k, v in self.members[index].state_dict().items()}

    def member(self, index: int) -> nn.Module:
        return copy.deepcopy(self.members[index])
