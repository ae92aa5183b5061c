"""What an unlearning method gets to see: the memorized sequences, a clean pool, and the LM losses on them.

The TinyMem code computes every loss as Transformers' causal-LM loss over all next-token positions of the padded
rows (pad targets included, no attention mask); that is the default here. ``ignore_token_id`` (e.g. the pad id)
excludes targets equal to it instead, for data whose padding should not count.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UnlearningData", "sequence_nll", "token_nll", "batches", "exclude_rows"]


def _check_ids(name: str, ids: Tensor, *, allow_empty: bool) -> None:
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.dtype not in (torch.long, torch.int, torch.int16,
                                                                             torch.uint8, torch.int8):
        got = f"{type(ids).__name__} {getattr(ids, 'dtype', '')} of shape {tuple(getattr(ids, 'shape', ()))}"
        raise ValueError(f"{name} must be an integer tensor of token ids [N, T], got {got}")
    if ids.shape[1] < 2:
        raise ValueError(f"{name} sequences need at least 2 tokens to have a next-token loss, got T={ids.shape[1]}")
    if not allow_empty and ids.shape[0] == 0:
        raise ValueError(f"{name} is empty: there is nothing to unlearn (no memorized sequence was found or given)")


@dataclass
class UnlearningData:
    """Token ids the unlearning methods use.

    Attributes:
        memorized: ``[N, T]`` the memorized (noised or backdoored) sequences to remove; N ≥ 1.
        clean: ``[M, T']`` sequences whose behaviour must be kept (Greedy, BalancedSubnet); may be ``None`` for the
            methods that only look at the memorized set.
        prompt_len: tokens of the prompt; neuron scores (Activations, Integrated Gradients) are averaged over the
            positions from ``prompt_len - 1`` on, i.e. those that predict the memorized continuation.
        ignore_token_id: target token excluded from the losses (``None``: every position counts, as in TinyMem).
    """

    memorized: Tensor
    clean: Tensor | None = None
    prompt_len: int = 50
    ignore_token_id: int | None = None

    def __post_init__(self) -> None:
        _check_ids("memorized", self.memorized, allow_empty=False)
        if self.clean is not None:
            _check_ids("clean", self.clean, allow_empty=True)
        if not isinstance(self.prompt_len, int) or isinstance(self.prompt_len, bool) or self.prompt_len < 1:
            raise ValueError(f"prompt_len must be a positive integer, got {self.prompt_len!r}")
        if self.prompt_len >= self.memorized.shape[1]:
            raise ValueError(f"prompt_len={self.prompt_len} leaves no continuation in memorized sequences of length "
                             f"{self.memorized.shape[1]}")

    def require_clean(self, method: str) -> Tensor:
        """The clean pool, or a ``ValueError`` naming ``method`` when there is none."""
        if self.clean is None or self.clean.shape[0] == 0:
            raise ValueError(f"{method} needs a non-empty clean pool (UnlearningData.clean) to balance against")
        return self.clean


def token_nll(logits: Tensor, input_ids: Tensor, ignore_token_id: int | None = None) -> tuple[Tensor, Tensor]:
    """Next-token NLL ``[B, T-1]`` of ``logits [B, T, V]`` against ``input_ids [B, T]`` and its weight mask ``[B, T-1]``."""
    targets = input_ids[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="none")
    nll = nll.view_as(targets)
    weights = torch.ones_like(nll) if ignore_token_id is None else (targets != ignore_token_id).to(nll.dtype)
    return nll, weights


def sequence_nll(model: nn.Module, input_ids: Tensor, ignore_token_id: int | None = None, **forward_kwargs) -> Tensor:
    """``[B]`` mean next-token NLL of each sequence under ``model`` (a Transformers causal LM)."""
    logits = model(input_ids=input_ids, **forward_kwargs).logits
    nll, weights = token_nll(logits, input_ids, ignore_token_id)
    return (nll * weights).sum(1) / weights.sum(1).clamp_min(1)


def batches(ids: Tensor, batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None) -> Iterator[Tensor]:
    """Row-index batches ``[≤ batch_size]`` covering ``range(len(ids))`` once (shuffled with ``generator``)."""
    order = torch.randperm(len(ids), generator=generator) if shuffle else torch.arange(len(ids))
    yield from order.split(batch_size)


def exclude_rows(pool: Tensor, rows: Tensor) -> Tensor:
    """``pool`` without the rows equal (as token sequences) to a row of ``rows``; compared on the common length."""
    if pool.shape[0] == 0 or rows.shape[0] == 0:
        return pool
    width = min(pool.shape[1], rows.shape[1])
    banned = {tuple(r) for r in rows[:, :width].tolist()}
    keep = torch.tensor([tuple(r) not in banned for r in pool[:, :width].tolist()], dtype=torch.bool)
    return pool[keep]
