"""The needle summary of benchmarks/squeezed_attention_accuracy.py pairs every method with dense on its own questions."""

from __future__ import annotations

import pytest

from benchmarks.squeezed_attention_accuracy import depth_markdown, needles_markdown, summarize_needles


def _rec(method, target, correct, budget=0.3):
    return {"method": method, "target_budget": target, "correct": correct, "budget": budget, "kl": 0.1,
            "mass_recall": 0.9, "output_error": 0.1, "answer_logprob": -1.0}


def _question(i, dense_ok, rows, depth):
    return {"context_key": "c", "question": i, "split": "test", "length": 2048, "task": "single", "depth": depth,
            "records": [_rec("dense", 1.0, dense_ok, 1.0)] + rows}


def test_subset_methods_are_paired_with_dense_on_their_questions():
    records = [
        _question(0, True, [_rec("a", 0.3, True), _rec("b", 0.3, False)], 0.05),
        _question(1, True, [_rec("a", 0.3, False), _rec("b", 0.3, False)], 0.95),
        _question(2, False, [_rec("a", 0.3, False)], 0.5),  # b was not run on questions 2 and 3
        _question(3, True, [_rec("a", 0.3, True)], 0.5),
    ]
    table = {(r["method"], r["tasks"]): r for r in summarize_needles(records)["table"]
             if r["length"] == 2048 and r["split"] == "test"}
    a, b = table[("a", "single")], table[("b", "single")]
    assert a["n"] == 4 and a["accuracy"] == pytest.approx(0.5)
    assert a["vs_dense"]["delta"] == pytest.approx(0.5 - 0.75)
    assert b["n"] == 2 and b["accuracy"] == 0.0
    assert b["vs_dense"]["delta"] == pytest.approx(-1.0)  # dense got both of b's questions right
    solved = {r["method"]: r for r in summarize_needles(records, dense_solved_only=True)["table"]
              if r["tasks"] == "single" and r["length"] == 2048}
    assert solved["a"]["n"] == 3 and solved["a"]["accuracy"] == pytest.approx(2 / 3)
    depth = summarize_needles(records)["depth"]
    bins = {(r["method"], r["bin"], r["length"]): r for r in depth if r["tasks"] == "needle"}
    assert bins[("a", 0, 2048)]["accuracy"] == 1.0 and bins[("a", 2, 2048)]["n"] == 2
    assert "| a | 0.3 |" in needles_markdown(summarize_needles(records), split="test", tasks="single", length=2048)
    assert "100 (n=1)" in depth_markdown(summarize_needles(records), split="test")
