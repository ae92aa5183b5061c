"""What second-order probes need from a model's ops, and one clear error when an op cannot give it.

Hessian-vector products differentiate the gradient (double backward) or push a tangent through it (forward-over-
reverse). Most aten ops support both; the fused attention kernels that ``F.scaled_dot_product_attention`` picks by
default do not (CPU flash, CUDA flash / memory-efficient / cuDNN: "derivative for
aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented"). :func:`second_order_context`
therefore runs the probed loss with the **math** SDPA backend, which is built from differentiable primitives — so
``nn.Transformer``, ``nn.MultiheadAttention`` and Transformers models with ``attn_implementation="sdpa"`` work
unchanged. Any other op without a second derivative (a custom ``autograd.Function`` marked
``@once_differentiable``, cuDNN RNNs, ...) is reported by :func:`unsupported_op_error`: one error naming the op and
the remedies, instead of torch's message from deep inside autograd.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["SecondOrderUnsupportedError", "is_missing_derivative", "once_differentiable_functions",
           "second_order_context", "unsupported_op_error"]

# torch's messages for an op without the needed derivative (reverse-over-reverse, forward-mode, custom Functions).
_PATTERNS = (
    (re.compile(r"derivative for '?([^'\s]+?)'? is not implemented"), None),
    (re.compile(r"Trying to use forward AD with (\S+?) that does not support it"), None),
    (re.compile(r"[Tt]rying to differentiate twice a function that was marked with @once_differentiable"),
     "a torch.autograd.Function marked @once_differentiable"),
    (re.compile(r"jvp is not implemented for|jvp function"), "a torch.autograd.Function without a jvp"),
    (re.compile(r"must override the setup_context staticmethod"),
     "a torch.autograd.Function without setup_context (torch.func cannot transform it)"),
    (re.compile(r"(\S*cudnn\S*) .*(?:can only be called in training mode|double backward)", re.I), None),
)

REMEDY = ("remedies: give the op a second derivative (for a custom autograd.Function: implement a differentiable "
          "backward without @once_differentiable, and jvp for hvp_method='func'); pass loss_fn=callable(module, "
          "batch) computing the loss with differentiable ops; or use LossLandscapeProbe(directions='random'), "
          "which needs no second derivatives")


class SecondOrderUnsupportedError(RuntimeError):
    """The probed loss uses an op whose second derivative torch does not implement.

    Attributes:
        op: the op's name as torch reports it (e.g. ``aten::_cudnn_rnn_backward``).
    """

    def __init__(self, message: str, *, op: str) -> None:
        super().__init__(message)
        self.op = op


def is_missing_derivative(error: BaseException) -> str | None:
    """The op named by ``error`` when it is a missing-derivative error, else None."""
    if not isinstance(error, (RuntimeError, NotImplementedError)):
        return None
    text = str(error)
    for pattern, fixed in _PATTERNS:
        match = pattern.search(text)
        if match:
            return fixed or match.group(1).rstrip(".,:")
    return None


def unsupported_op_error(error: BaseException, *, method: str, probe: str = "the Hessian probe"
                         ) -> SecondOrderUnsupportedError | None:
    """A :class:`SecondOrderUnsupportedError` for ``error`` (None when it is not a missing-derivative error)."""
    op = is_missing_derivative(error)
    if op is None:
        return None
    route = {"double_backward": "double backward", "func": "torch.func forward-over-reverse"}.get(method, method)
    return SecondOrderUnsupportedError(
        f"{probe} needs Hessian-vector products ({route}), but the model's loss uses {op}, which has no "
        f"{'forward-mode' if method == 'func' else 'second'} derivative in torch; {REMEDY}", op=op)


@contextmanager
def second_order_context() -> Iterator[None]:
    """Run the enclosed loss / gradient computations with the math SDPA backend (double-differentiable)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield


def _is_once_differentiable(function_class: type) -> bool:
    backward = getattr(function_class, "backward", None)
    code = getattr(backward, "__code__", None)
    # torch.autograd.function.once_differentiable wraps backward (functools.wraps) in a function named "wrapper".
    return getattr(backward, "__wrapped__", None) is not None and code is not None and code.co_name == "wrapper" \
        and code.co_filename.replace("\\", "/").endswith("torch/autograd/function.py")


def once_differentiable_functions(loss: torch.Tensor, *, max_nodes: int = 100_000) -> list[str]:
    """Names of custom autograd Functions marked ``@once_differentiable`` in ``loss``'s graph.

    Their backward runs without grad, so a gradient through them silently carries no graph: double backward would
    read their contribution to H·v as zero instead of failing. The graph is walked once (at most ``max_nodes``).
    """
    found: list[str] = []
    seen: set[int] = set()
    stack = [loss.grad_fn] if loss.grad_fn is not None else []
    while stack and len(seen) < max_nodes:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        cls = getattr(node, "_forward_cls", None)
        if cls is not None and _is_once_differentiable(cls) and cls.__name__ not in found:
            found.append(cls.__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found
