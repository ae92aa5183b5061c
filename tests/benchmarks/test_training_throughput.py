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


def test_a_timed_out_row_says_how_far_the_child_got(tmp_path):
    import time

    from benchmarks.training_throughput import _progress_note, _progress_writer

    result = tmp_path / "flow_matching-before.json"
    assert _progress_note(result) == " before the child's first progress record (interpreter start-up and imports)"
    write = _progress_writer(result, time.perf_counter() - 42.0)
    write("set-up (config, data, model)")
    assert _progress_note(result).startswith(" in set-up (config, data, model) (last record at 42.")
    write("warm-up", 1)
    assert _progress_note(result).startswith(" in warm-up (step 1, last record at 42.")
    assert not result.exists()  # the result file itself is only the finished run's
