"""The layer calibration of benchmarks/squeezed_attention_accuracy.py: its summary, its allocation file, its row."""

from __future__ import annotations

import argparse
import json

import pytest

from benchmarks.squeezed_attention_accuracy import (
    baseline_factories,
    layer_calibration_markdown,
    load_layer_allocation,
    summarize_layer_calibration,
)
from framework.models.components.squeezed.layer_budgets import PerLayerSelector
from framework.models.components.squeezed.product_quantized_selection import ProductQuantizedTopK

GROUPS = {"0-1": [0, 1], "2-3": [2, 3]}


def _question(dense_ok, kl, dense_lp=-1.0):
    """kl: (group, multiplier) -> KL at budget 0.2 (answer log-prob = dense - KL, for the change column)."""
    recs = [{"method": f"{g}|{m:g}", "target_budget": 0.2, "kl": v, "answer_logprob": dense_lp - v}
            for (g, m), v in kl.items()]
    return {"dense_correct": dense_ok, "dense_logprob": dense_lp, "records": recs if dense_ok else []}


def test_summary_means_over_solved_questions_and_allocates():
    # group 0-1 is insensitive, 2-3 gains from a double budget: the allocation moves keys from 0-1 to 2-3
    q1 = {("0-1", 0.5): 0.0, ("0-1", 1.0): 0.0, ("0-1", 1.5): 0.0, ("2-3", 0.5): 2.0, ("2-3", 1.0): 1.0,
          ("2-3", 1.5): 0.2}
    q2 = {k: v * 3 for k, v in q1.items()}
    out = summarize_layer_calibration([_question(True, q1), _question(True, q2), _question(False, {})],
                                      row="pq_m16_sinks", groups=GROUPS, budgets=[0.2], multipliers=[0.5, 1.0, 1.5])
    assert out["questions"] == 2 and out["questions_asked"] == 3
    assert out["losses"]["0.2"]["2-3"]["1"] == pytest.approx(2.0)  # mean of 1.0 and 3.0
    assert out["answer_logprob_change"]["0.2"]["2-3"]["0.5"] == pytest.approx(-4.0)
    alloc = out["allocation"]["0.2"]
    assert alloc["multipliers"] == {"0-1": 0.5, "2-3": 1.5}
    assert alloc["layer_budgets"] == pytest.approx([0.1, 0.1, 0.3, 0.3])
    assert alloc["predicted_kl"] == pytest.approx(0.4) and alloc["uniform_kl"] == pytest.approx(2.0)
    assert "| 2-3 | 4.0000 | 2.0000 | 0.4000 | x1.5 |" in layer_calibration_markdown(out)
    with pytest.raises(ValueError, match="no dense-solved"):
        summarize_layer_calibration([_question(False, {})], row="r", groups=GROUPS, budgets=[0.2],
                                    multipliers=[1.0])
    with pytest.raises(ValueError, match=r"lack row 0-1\|2 at budget 0.2"):
        summarize_layer_calibration([_question(True, q1)], row="r", groups=GROUPS, budgets=[0.2],
                                    multipliers=[1.0, 2.0])


def test_allocation_file_gives_a_per_layer_row(tmp_path):
    path = tmp_path / "alloc.json"
    path.write_text(json.dumps({"row": "pq_m16_sinks", "allocation": {
        "0.2": {"layer_budgets": [0.1, 0.1, 0.3, 0.3]}}}))
    row, table = load_layer_allocation(str(path))
    assert row == "pq_m16_sinks" and table == {0.2: [0.1, 0.1, 0.3, 0.3]}
    factories = baseline_factories(argparse.Namespace(layer_allocation=str(path)))
    sel = factories["pq_m16_sinks_layers"](0.2)
    assert isinstance(sel, PerLayerSelector) and sel.budget == pytest.approx(0.2)
    inner = list(sel.selectors)
    assert all(isinstance(s, ProductQuantizedTopK) for s in inner)
    assert [s.budget for s in inner] == [0.1, 0.1, 0.3, 0.3]
    assert all(s._fits is inner[0]._fits for s in inner)  # one quantizer cache: each layer fitted once
    with pytest.raises(ValueError, match="no allocation for budget 0.3"):
        factories["pq_m16_sinks_layers"](0.3)
    assert "pq_m16_sinks_layers" not in baseline_factories(argparse.Namespace(layer_allocation=None))


@pytest.mark.parametrize("content, match", [
    ("not json", "not a layer-allocation JSON"),
    ('{"row": "pq_m16_sinks"}', "not a layer-allocation JSON"),
    ('{"row": "nope", "allocation": {}}', "is not one of"),
])
def test_bad_allocation_files_fail_with_the_path(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        load_layer_allocation(str(path))
    assert str(path) in str(err.value)
    with pytest.raises(ValueError, match="not a layer-allocation JSON"):
        load_layer_allocation(str(tmp_path / "missing.json"))


def test_operating_point_rows_and_mode_checks():
    from benchmarks.squeezed_attention_accuracy import _calibration_row
    from framework.models.components.squeezed.attribution import LayerSubsetSelector

    row = _calibration_row("operating", "pq_m16_sinks", 0.2, 1.5, [1, 2], 4)
    assert isinstance(row, PerLayerSelector) and [s.budget for s in row.selectors] == pytest.approx(
        [0.2, 0.3, 0.3, 0.2])
    iso = _calibration_row("isolated", "pq_m16_sinks", 0.2, 0.5, [1, 2], 4)
    assert isinstance(iso, LayerSubsetSelector) and iso.inner.budget == pytest.approx(0.1) and iso.layers == {1, 2}
    q = _question(True, {("0-1", 1.0): 0.1, ("2-3", 1.0): 0.2})
    q["mode"] = "operating"
    out = summarize_layer_calibration([q], row="r", groups=GROUPS, budgets=[0.2], multipliers=[1.0],
                                      mode="operating")
    assert out["mode"] == "operating" and "the others at the target" in layer_calibration_markdown(out)
    with pytest.raises(ValueError, match="one file per mode"):
        summarize_layer_calibration([q, _question(True, {("0-1", 1.0): 0.1, ("2-3", 1.0): 0.2})], row="r",
                                    groups=GROUPS, budgets=[0.2], multipliers=[1.0], mode="operating")


def test_bad_calibration_arguments_fail_before_the_model_loads(tmp_path, monkeypatch):
    import benchmarks.squeezed_attention_accuracy as bench

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(bench, "load_backbone", no_model)
    out = str(tmp_path / "alloc.json")
    with pytest.raises(SystemExit):  # argparse error: 0.6 x 2 leaves (0, 1]
        bench.main(["--suite", "layer_calibration", "--budgets", "0.6", "--out", out])
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"context_key": "c", "question": 0, "mode": "isolated", "dense_correct": False,
                                   "records": []}) + "\n")
    with pytest.raises(ValueError, match="use one --records file per --calib-mode"):
        bench.main(["--suite", "layer_calibration", "--calib-mode", "operating", "--records", str(records),
                    "--out", out])
