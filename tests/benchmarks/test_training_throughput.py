"""The variants of ``benchmarks/training_throughput.py`` form two cumulative chains (``before`` .. ``cudagraphs`` and
``before`` → ``static`` → ``graphed`` / ``static_cudagraphs``) and every config has each of them."""

from __future__ import annotations

import pytest

from benchmarks.training_throughput import CONFIGS, CUMULATIVE, VARIANTS, variant_overrides


@pytest.mark.parametrize("config", list(CONFIGS))
def test_variants_are_cumulative(config):
    previous: list[str] = []
    for variant in CUMULATIVE:
        current = variant_overrides(config, variant)
        assert current[: len(previous)] == previous
        assert variant == "before" or len(current) > len(previous)
        previous = current
    before, static = variant_overrides(config, "before"), variant_overrides(config, "static")
    assert static[: len(before)] == before and len(static) > len(before)
    for variant in ("graphed", "static_cudagraphs"):
        current = variant_overrides(config, variant)
        assert current[: len(static)] == static and len(current) > len(static)
    assert set(VARIANTS) == {*CUMULATIVE, "static", "graphed", "static_cudagraphs"}
    with pytest.raises(ValueError, match="unknown variant"):
        variant_overrides(config, "fastest")
