"""Find the feed-forward (MLP) blocks of any Transformers causal LM, and edit them neuron by neuron.

A *neuron* of an MLP block is one of its ``inner_dim`` hidden units: the input of the block's output projection
(GPT-2 ``mlp.c_proj``, Llama ``mlp.down_proj``, GPT-NeoX ``mlp.dense_4h_to_h``, OPT ``fc2``). Its *input weights*
are the rows (``nn.Linear``) or columns (GPT-2 ``Conv1D``, which stores ``[in, out]``) of the input projections that
produce it (GPT-2 ``c_fc`` + bias; Llama ``gate_proj`` and ``up_proj``); its *output weights* are the matching slice of
the output projection. Zeroing a neuron's input weights and biases makes its activation exactly 0 for every
activation the supported architectures use (ReLU, GELU, SiLU-gated: act(0)·0 = 0), which is how the neuron-level
unlearning methods ablate it, as in the TinyMem code.

Supported layouts (found by child-module names, so any model built from these blocks works):

========================  =====================================  ==================
architecture              input projections                      output projection
========================  =====================================  ==================
GPT-2 (Conv1D)            ``c_fc``                               ``c_proj``
Llama / Mistral / Qwen    ``gate_proj``, ``up_proj``             ``down_proj``
GPT-NeoX / Pythia         ``dense_h_to_4h``                      ``dense_4h_to_h``
OPT / Phi                 ``fc1``                                ``fc2``
========================  =====================================  ==================
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["MLPBlock", "MLP_LAYOUTS", "locate_mlp_blocks", "mlp_weight_parameters", "neuron_hook", "neuron_hooks"]

# (input projection names, output projection name), tried in order.
MLP_LAYOUTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("c_fc",), "c_proj"),
    (("gate_proj", "up_proj"), "down_proj"),
    (("dense_h_to_4h",), "dense_4h_to_h"),
    (("fc1",), "fc2"),
)


def _is_conv1d(module: nn.Module) -> bool:
    # transformers.pytorch_utils.Conv1D stores its weight as [in, out]; checked by name to avoid importing it.
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _out_features(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if _is_conv1d(module):
        return int(module.weight.shape[1])
    raise ValueError(f"MLP projection {type(module).__name__} is neither nn.Linear nor GPT-2 Conv1D")


def _in_features(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    if _is_conv1d(module):
        return int(module.weight.shape[0])
    raise ValueError(f"MLP projection {type(module).__name__} is neither nn.Linear nor GPT-2 Conv1D")


@dataclass(frozen=True, eq=False)
class MLPBlock:
    """One feed-forward block: ``layer`` (0-based order in the model), module ``name``, its projections.

    ``inner_dim`` is the number of neurons ``I``; every per-neuron tensor below is ``[I]`` or ``[I, ·]``.
    """

    layer: int
    name: str
    input_names: tuple[str, ...]
    input_projections: tuple[nn.Module, ...]
    output_name: str
    output_projection: nn.Module
    inner_dim: int

    def projections(self) -> dict[str, nn.Module]:
        """Input and output projections by qualified module name."""
        named = {f"{self.name}.{n}": m for n, m in zip(self.input_names, self.input_projections)}
        named[f"{self.name}.{self.output_name}"] = self.output_projection
        return named

    def weights(self) -> dict[str, nn.Parameter]:
        """The block's weight matrices (no biases) by qualified name: what weight-level methods edit."""
        return {f"{n}.weight": m.weight for n, m in self.projections().items()}

    def output_weights(self) -> Tensor:
        """``[I, H]``: the output-projection weights of each neuron (a view; detach before editing)."""
        w = self.output_projection.weight
        return w if _is_conv1d(self.output_projection) else w.t()

    @torch.no_grad()
    def zero_neurons(self, neurons: Tensor) -> None:
        """Zero the input weights and biases of ``neurons`` (``[k]`` indices), so their activation is 0."""
        neurons = neurons.to(device=self.output_projection.weight.device, dtype=torch.long)
        for module in self.input_projections:
            if _is_conv1d(module):
                module.weight[:, neurons] = 0
            else:
                module.weight[neurons, :] = 0
            if getattr(module, "bias", None) is not None:
                module.bias[neurons] = 0


def locate_mlp_blocks(model: nn.Module, layers: Sequence[int] | None = None) -> list[MLPBlock]:
    """The MLP blocks of ``model`` in forward order; ``layers`` keeps only those indices (negatives count from the end).

    Raises ``ValueError`` when the model has no block of a supported layout (see the module docstring) or an index is
    out of range.
    """
    blocks: list[MLPBlock] = []
    for name, module in model.named_modules():
        children = dict(module.named_children())
        for input_names, output_name in MLP_LAYOUTS:
            if output_name in children and all(n in children for n in input_names):
                inputs = tuple(children[n] for n in input_names)
                output = children[output_name]
                inner = _in_features(output)
                for n, proj in zip(input_names, inputs):
                    if _out_features(proj) != inner:
                        raise ValueError(
                            f"{name}.{n} produces {_out_features(proj)} features but {name}.{output_name} takes "
                            f"{inner}; not an MLP block"
                        )
                blocks.append(MLPBlock(layer=len(blocks), name=name, input_names=input_names, input_projections=inputs,
                                       output_name=output_name, output_projection=output, inner_dim=inner))
                break
    if not blocks:
        layouts = ", ".join(f"{'+'.join(i)} -> {o}" for i, o in MLP_LAYOUTS)
        raise ValueError(f"{type(model).__name__} has no MLP block of a supported layout ({layouts})")
    if layers is None:
        return blocks
    chosen = []
    for index in layers:
        if not isinstance(index, int) or isinstance(index, bool) or not -len(blocks) <= index < len(blocks):
            raise ValueError(f"layers must hold integers in [-{len(blocks)}, {len(blocks) - 1}] for this "
                             f"{len(blocks)}-block model, got {index!r}")
        chosen.append(blocks[index])
    if len({b.layer for b in chosen}) != len(chosen):
        raise ValueError(f"layers lists a block twice: {list(layers)!r}")
    return sorted(chosen, key=lambda b: b.layer)


def mlp_weight_parameters(blocks: Sequence[MLPBlock]) -> dict[str, nn.Parameter]:
    """All MLP weight matrices of ``blocks`` by qualified name, in forward order."""
    out: dict[str, nn.Parameter] = {}
    for block in blocks:
        out.update(block.weights())
    return out


@contextlib.contextmanager
def neuron_hook(block: MLPBlock, fn: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Within the context, the neuron activations ``a [..., I]`` of ``block`` are replaced by ``fn(a)``."""

    def pre_hook(_module: nn.Module, args: tuple) -> tuple:
        return (fn(args[0]), *args[1:])

    handle = block.output_projection.register_forward_pre_hook(pre_hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def neuron_hooks(blocks: Sequence[MLPBlock], fns: Sequence[Callable[[Tensor], Tensor]]) -> Iterator[None]:
    """:func:`neuron_hook` for several blocks at once (``fns[i]`` for ``blocks[i]``)."""
    with contextlib.ExitStack() as stack:
        for block, fn in zip(blocks, fns, strict=True):
            stack.enter_context(neuron_hook(block, fn))
        yield
