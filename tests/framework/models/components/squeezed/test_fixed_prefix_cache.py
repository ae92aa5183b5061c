"""InPlaceLayer: appends equal DynamicLayer's concatenation, without copying the fixed context every token."""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from framework.models.components.squeezed.fixed_prefix_cache import MIN_SLACK, InPlaceLayer, in_place_cache_layers


def test_appends_equal_concatenation_and_copy_the_context_once():
    g = torch.Generator().manual_seed(0)
    context_k, context_v = (torch.randn(1, 2, 40, 8, generator=g) for _ in range(2))
    cache = DynamicCache()
    assert in_place_cache_layers(cache)
    plain = DynamicCache()
    for c in (cache, plain):
        c.update(context_k.expand(3, -1, -1, -1), context_v.expand(3, -1, -1, -1), 0)  # shared, expanded
    assert isinstance(cache.layers[0], InPlaceLayer) and type(plain.layers[0]) is DynamicLayer
    assert cache.layers[0].keys.data_ptr() == context_k.data_ptr()  # the context itself is not copied
    pointers = set()
    for step in range(MIN_SLACK + 5):  # runs past the first slack: one regrowth
        t = 7 if step == 0 else 1  # a user input, then generated tokens
        k, v = (torch.randn(3, 2, t, 8, generator=g) for _ in range(2))
        got_k, got_v = cache.update(k, v, 0)
        want_k, want_v = plain.update(k, v, 0)
        assert torch.equal(got_k, want_k) and torch.equal(got_v, want_v)
        pointers.add(got_k.data_ptr())
    assert len(pointers) == 2  # first append and one regrowth; every other step wrote in place
    assert cache.get_seq_length() == plain.get_seq_length() == 40 + 7 + MIN_SLACK + 4
    cache.crop(-3)
    plain.crop(-3)
    k, v = (torch.randn(3, 2, 1, 8, generator=g) for _ in range(2))
    assert torch.equal(cache.update(k, v, 0)[0], plain.update(k, v, 0)[0])


def test_non_empty_cache_is_left_alone():
    cache = DynamicCache()
    cache.update(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4), 0)
    assert not in_place_cache_layers(cache)
