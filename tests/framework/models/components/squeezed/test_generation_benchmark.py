"""The end-to-end benchmark script runs on CPU at tiny scale (`--tiny`) and refuses bad arguments up front."""

from __future__ import annotations

import json

import pytest

from benchmarks import squeezed_attention_generation as bench


def test_tiny_run_writes_every_table(tmp_path, capsys):
    out = tmp_path / "gen.json"
    bench.main(["--tiny", "--contexts", "400", "--batches", "1", "--budgets", "0.5", "--inputs", "4",
                "--new-tokens", "4", "--kmeans-iters", "1", "--out", str(out)])
    doc = json.loads(out.read_text())
    ctx = doc["contexts"]["400"]
    assert ctx["build"]["clusters_per_head"] == int(0.05 * (400 - bench.WINDOW))
    assert [r["attention"] for r in ctx["eager"]] == ["sdpa", "squeezed (topk)", "squeezed (calibrated)"]
    kinds = [r["kind"] for r in ctx["static"]]
    assert kinds == ["dense"] + ["ttft", "decode", "decode"] * 2  # decode with the split and the fused kernels
    assert [r.get("decode_path") for r in ctx["static"] if r["kind"] == "decode"] == ["split", "fused"] * 2
    for r in ctx["static"][1:]:
        assert r["ms"] > 0 and r["speedup"] > 0 and r["ceiling"] >= 1.0
        assert 0.0 < r["kept"] <= 1.0
    topk_decode = ctx["static"][2]
    assert topk_decode["kept"] == pytest.approx(0.5, abs=1 / 400)  # exactly ceil(0.5 N) keys
    text = bench.render(doc)
    assert "Time to first token" in text and "| 400 | 1 | 4 |" in text
    assert "| 400 | 1 | sdpa |" in text


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--budgets", "0"], "budgets must be numbers in \\(0, 1\\]"),
        (["--budgets", "0.1,1.2"], "1.2"),
        (["--contexts", "64"], "contexts values must be integers >= 102"),
        (["--modes", "oracle"], "modes must be"),
        (["--new-tokens", "2"], "new-tokens must be >= 4"),
        (["--batches", "0"], "batches"),
        (["--decode-paths", "split,persistent"], "decode-paths must be"),
    ],
)
def test_bad_arguments_exit_before_any_work(argv, match):
    with pytest.raises(SystemExit, match=match):
        bench.parse_args(argv)


def test_ceilings_are_ratios_of_bytes_and_flops():
    cfg = bench.model_config(bench.parse_args(["--tiny"]), 4096)
    full = bench.decode_ceiling(cfg, 10**6, 1e12, 1000, 1, 10, 1.0, 0)
    assert full["ceiling"] == pytest.approx(1.0)
    half = bench.decode_ceiling(cfg, 0, None, 1000, 2, 0, 0.5, 0)
    assert half["ceiling"] == pytest.approx(2.0)  # no weights, no tail, no centroids: 1 / kept
    pre = bench.prefill_ceiling(cfg, 0, 1000, 1, 2, 0.25, 0)
    assert pre["ceiling"] == pytest.approx((1000 + 1) / (250 + 1))


def test_profiler_attribution_by_launch_and_by_name():
    """Kernels count as attention when launched inside an attention range; unrecorded launches fall back to the
    kernel name (Triton launches are not charged to record_function ranges by the profiler itself)."""
    names = bench.attention_kernel_names()
    assert {"_decode_kernel", "_fused_lookup_kernel", "_logits_kernel", "_take_expand_kernel"} <= names
    assert not any("rope" in n for n in names)  # RoPE + cache write is not attention
    ranges = [(100, 200), (400, 500)]
    launches = {1: 150, 2: 300, 3: 450, 4: 90}
    kernels = [("_decode_kernel", 1, 5.0), ("gemm", 2, 7.0), ("_logits_kernel", 3, 2.0), ("copy", 4, 1.0),
               ("_decode_kernel", 9, 4.0), ("gemm", 10, 3.0)]  # 9, 10: launches not recorded
    att = bench.attribute_kernels(ranges, launches, kernels, names)
    assert att == {"attention_us": 11.0, "by_launch_us": 7.0, "by_name_us": 4.0, "unmatched": 2}
