"""``benchmarks/squeezed_records_compare.py`` pairs questions across two record files and reports B − A."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, correct: list[bool], dense: list[bool], task: str = "single") -> None:
    lines = []
    for i, (c, d) in enumerate(zip(correct, dense)):
        records = [{"method": "dense", "target_budget": 1.0, "correct": d, "kl": 0.0, "budget": 1.0, "mass_recall": 1.0},
                   {"method": "ours", "target_budget": 0.325, "correct": c, "kl": 0.1 * i, "budget": 0.325,
                    "mass_recall": 0.9}]
        lines.append(json.dumps({"context_key": "ctx", "question": i, "split": "test", "task": task,
                                 "records": records}))
    path.write_text("\n".join(lines) + "\n")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/squeezed_records_compare.py", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_paired_difference_on_dense_solved_questions(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    dense = [True, True, True, True, False]
    _write(a, [True, False, False, False, True], dense)
    _write(b, [True, True, True, False, False], dense)
    out = _run(str(a), str(b), "--method", "ours", "--budget", "0.325", "--dense-solved-only")
    assert out.returncode == 0, out.stderr
    line = out.stdout.splitlines()[0]
    # Dense solves questions 0-3: A 1/4 = 25 %, B 3/4 = 75 %, B − A = +50 points.
    assert line.startswith("all: n = 4;") and "A 25.0 %" in line and "B 75.0 %" in line and "B − A +50.0 [" in line
    # the KL of each question (0.1 i) is the same in both files: the paired KL difference is exactly 0
    assert line.endswith("KL +0.0000 [+0.0000, +0.0000]")


def test_unknown_method_is_one_clear_error(tmp_path):
    a = tmp_path / "a.jsonl"
    _write(a, [True, False], [True, True])
    out = _run(str(a), str(a), "--method", "nope", "--budget", "0.325")
    assert out.returncode != 0 and "error: only 0 question(s) scored by nope (A)" in out.stderr
    assert "Traceback" not in out.stderr


def test_two_rows_of_one_file(tmp_path):
    # --method-b: another method of the same questions (here B = dense itself, which is right on every question)
    a = tmp_path / "a.jsonl"
    _write(a, [True, False, False, True], [True, True, True, True])
    out = _run(str(a), str(a), "--method", "ours", "--method-b", "dense", "--budget", "0.325")
    assert out.returncode != 0 and "scored by ours (A) and dense (B) at 0.325" in out.stderr  # dense is at 1.0
    lines = []
    for i, c in enumerate([True, False, False, True]):
        records = [{"method": "dense", "target_budget": 1.0, "correct": True, "kl": 0.0, "budget": 1.0,
                    "mass_recall": 1.0},
                   {"method": "ours", "target_budget": 0.325, "correct": c, "kl": 0.1, "budget": 0.325,
                    "mass_recall": 0.9},
                   {"method": "other", "target_budget": 0.325, "correct": True, "kl": 0.0, "budget": 0.325,
                    "mass_recall": 0.95}]
        lines.append(json.dumps({"context_key": "ctx", "question": i, "split": "test", "task": "multi",
                                 "records": records}))
    a.write_text("\n".join(lines) + "\n")
    out = _run(str(a), str(a), "--method", "ours", "--method-b", "other", "--budget", "0.325")
    assert out.returncode == 0, out.stderr
    # A 2/4 = 50 %, B 4/4 = 100 %: B − A = +50 points
    assert "A 50.0 %" in out.stdout and "B 100.0 %" in out.stdout and "B − A +50.0 [" in out.stdout
