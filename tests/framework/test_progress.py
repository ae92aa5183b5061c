"""Issue 19 (problem 6): long work shows progress; benchmark tables are markdown while they run."""

from __future__ import annotations

import io
import re

import pytest
import torch

from framework.progress import progress_lines, stage


def test_progress_lines_reports_about_ten_times_with_counts():
    out = io.StringIO()
    assert list(progress_lines(range(50), total=50, description="items", stream=out)) == list(range(50))
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert "items 5/50 (10 %)" in lines[0] and "items 50/50 (100 %)" in lines[-1]
    assert all(re.search(r"\d+\.\d s elapsed, ~\d+ s left", line) for line in lines)


def test_progress_lines_validates():
    with pytest.raises(ValueError, match="total"):
        list(progress_lines([], total=-1, description="x"))
    with pytest.raises(ValueError, match="steps"):
        list(progress_lines([], total=3, description="x", steps=0))


def test_stage_reports_start_end_and_failure():
    out = io.StringIO()
    with stage("building", stream=out):
        pass
    with pytest.raises(RuntimeError), stage("breaking", stream=out):
        raise RuntimeError("x")
    text = out.getvalue()
    assert "building ..." in text and re.search(r"building done in \d+\.\d s", text)
    assert re.search(r"breaking failed after \d+\.\d s", text)


def test_catalog_generation_shows_progress(capsys):
    from framework.datamodules.ground_motion.catalog import generate_synthetic_catalog

    columns = generate_synthetic_catalog(num_records=20, seed=0, num_stations=20)
    assert columns["waveform"].shape == (20, 6000)
    err = capsys.readouterr().err
    assert "synthetic ground-motion records 20/20 (100 %)" in err
    assert err.count("synthetic ground-motion records") == 10


def test_live_table_prints_markdown_rows_as_they_come():
    from benchmarks.harness import LiveTable, markdown_table

    out = io.StringIO()
    table = LiveTable(title="## T", columns=["a", "b"], stream=out)
    table.add({"a": 1, "b": 0.5, "ignored": 3})
    first = out.getvalue()
    assert first.strip().splitlines()[-3:] == ["| a | b |", "|---|---|", "| 1 | 0.5 |"]
    table.add({"a": 2})
    assert out.getvalue().splitlines()[-1] == "| 2 |  |"
    assert markdown_table(table.rows, ["a", "b"]).splitlines()[-1] == "| 2 |  |"


def test_landscape_benchmark_prints_markdown_not_dicts(capsys):
    from benchmarks.harness import LiveTable
    from benchmarks.landscape_pinn import _map, _summary_tables

    tables = {"pinn": LiveTable(columns=["beta", "rel_l2"]), "resnet": LiveTable(columns=["residual"])}
    rows = _map(lambda job: {"study": "pinn", "beta": job, "rel_l2": job / 10}, [1.0, 5.0], 1, tables)
    assert [r["beta"] for r in rows] == [1.0, 5.0]
    out = capsys.readouterr()
    assert "row:" not in out.out and "{" not in out.out
    assert "| 5 | 0.5 |" in out.out
    assert "model 2/2 done in" in out.err
    summary = {"spearman_vs_beta": {"lambda_1": 0.9}, "spearman_vs_rel_l2": {"lambda_1": 0.8},
               "spearman_vs_beta_ci95": {"lambda_1": [0.5, 0.99]},
               "targets": {"spearman(lambda_1, beta) >= 0.7": True}}
    text = _summary_tables(summary)
    assert "| lambda_1 | 0.9 | [0.500, 0.990] | 0.8 |" in text
    assert "| spearman(lambda_1, beta) >= 0.7 | True |" in text


def test_squeezed_index_build_shows_its_phases(capsys):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from framework.models.components.squeezed import FixedContextIndex, SqueezedAttention

    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="squeezed").eval()
    context = torch.randint(0, 64, (1, 200), generator=torch.Generator().manual_seed(0))
    FixedContextIndex.build(model, context, attention=SqueezedAttention(centroid_fraction=0.05))
    err = capsys.readouterr().err
    for phase in ("prefill done in", "k-means (", "threshold calibration done in", "index of a 200-token context"):
        assert phase in err, err
