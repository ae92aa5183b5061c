"""The variants of ``benchmarks/training_throughput.py`` are cumulative and every config has each of them."""

from __future__ import annotations

import pytest

from benchmarks.training_throughput import CONFIGS, VARIANTS, variant_overrides


@pytest.mark.parametrize("config", list(CONFIGS))
def test_variants_are_cumulative(config):
    previous: list[str] = []
    for variant in VARIANTS:
        current = variant_overrides(config, variant)
        assert current[: len(previous)] == previous
        assert variant == "before" or len(current) > len(previous)
        previous = current
    with pytest.raises(ValueError, match="unknown variant"):
        variant_overrides(config, "fastest")
