"""A Transformers cache layer that appends in place, so eager ``generate()`` over a fixed context does not copy it.

``DynamicLayer.update`` concatenates, i.e. copies the whole cache (at 128K tokens of the Llama-3-8B shape: 16 GiB per
sequence) on every generated token. ``InPlaceLayer`` keeps the fixed context as handed in (the index's shared,
expanded storage: no copy), and on the first append copies it once into a buffer with slack for the user input and
the generated tokens; later appends write into the slack and return views. It grows geometrically when the slack
runs out, so a step copies nothing in the common case and the total copy work stays linear.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

__all__ = ["InPlaceLayer", "in_place_cache_layers"]

MIN_SLACK = 256  # tokens of room added at each (re)allocation, at least
SLACK_FRACTION = 1 / 16  # ... and this fraction of the current length (geometric growth)


class InPlaceLayer(DynamicLayer):
    """``DynamicLayer`` with in-place appends into a pre-sized buffer (``keys``/``values`` are views of it)."""

    _key_buffer: torch.Tensor | None = None
    _value_buffer: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized or self.keys is None or self.keys.numel() == 0:
            # the fixed context (or a first prompt): keep it as is, no copy
            self.lazy_initialization(key_states, value_states)
            self.keys, self.values = key_states, value_states
            self._key_buffer = self._value_buffer = None
            return self.keys, self.values
        length, new = self.keys.shape[-2], key_states.shape[-2]
        buf = self._key_buffer
        fits = (buf is not None and buf.shape[-2] >= length + new and buf.shape[:2] == key_states.shape[:2]
                and self.keys.data_ptr() == buf.data_ptr())
        if not fits:
            capacity = length + new + max(MIN_SLACK, int(SLACK_FRACTION * (length + new)))
            self._key_buffer = self._grow(self.keys, key_states, capacity)
            self._value_buffer = self._grow(self.values, value_states, capacity)
        self._key_buffer[..., length:length + new, :].copy_(key_states)
        self._value_buffer[..., length:length + new, :].copy_(value_states)
        self.keys = self._key_buffer[..., : length + new, :]
        self.values = self._value_buffer[..., : length + new, :]
        return self.keys, self.values

    @staticmethod
    def _grow(old: torch.Tensor, new: torch.Tensor, capacity: int) -> torch.Tensor:
        b, h = new.shape[0], new.shape[1]
        buf = torch.empty(b, h, capacity, new.shape[-1], dtype=new.dtype, device=new.device)
        buf[..., : old.shape[-2], :].copy_(old.expand(b, -1, -1, -1))
        return buf

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        super().reset()

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._key_buffer = self._value_buffer = None  # views of the old buffer are replaced by new tensors
        super().batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._key_buffer = self._value_buffer = None
        super().batch_select_indices(indices)


def in_place_cache_layers(cache) -> bool:
    """Make an empty ``DynamicCache`` create ``InPlaceLayer``s (returns False, leaving the cache as is, on a
    Transformers version whose cache does not replicate a layer class)."""
    if getattr(cache, "layer_class_to_replicate", None) is DynamicLayer and not getattr(cache, "layers", None):
        cache.layer_class_to_replicate = InPlaceLayer
        return True
    return False
