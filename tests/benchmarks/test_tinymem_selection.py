"""The resumable parts of the TinyMem selection run: trial caches and finished-method files, checked when read."""

import json

import pytest

from benchmarks.evidence import SelectionProtocol
from benchmarks.tinymem_selection import FinishedMethod, TrialCache


def test_trial_cache_round_trip_and_key_order(tmp_path):
    path = tmp_path / "trials" / "BalancedSubnet.json"
    cache = TrialCache(path)
    assert cache.get("BalancedSubnet", {"ratio": 0.01, "epochs": 1}) is None
    cache.put("BalancedSubnet", {"ratio": 0.01, "epochs": 1}, 3.5, 8.0)
    again = TrialCache(path)  # a resumed run reads what the first one wrote
    assert again.get("BalancedSubnet", {"epochs": 1, "ratio": 0.01}) == {"harm": 3.5, "seconds": 8.0}
    assert again.get("BalancedSubnet", {"epochs": 3, "ratio": 0.01}) is None
    assert again.get("Subnet", {"epochs": 1, "ratio": 0.01}) is None


@pytest.mark.parametrize("text, problem", [("{not json", "not readable JSON"),
                                           ('{"k": {"harm": "x", "seconds": 1}}', "not a mapping"),
                                           ("[1, 2]", "not a mapping")])
def test_trial_cache_refuses_damaged_files(tmp_path, text, problem):
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem) as err:
        TrialCache(path)
    assert str(path) in str(err.value)


def test_finished_method_round_trip_fingerprint_and_damage(tmp_path):
    protocol = SelectionProtocol(validation_split="even", test_split="odd")
    protocol.select("M: ratio", [0.005, 0.01], lambda r: r * 100, criterion="harm", higher_is_better=False,
                    paper_value=0.01)
    protocol.report("M: ratio", 1.5)
    fingerprint = {"paper": {"ratio": 0.01}, "stages": [("ratio", [0.005, 0.01], 0.01)], "candidates": 10_000}
    path = tmp_path / "M.finished.json"
    FinishedMethod(path, fingerprint).save([{"method": "M", "backdoor_after": 0.0}],
                                           [protocol.selections["M: ratio"]])
    saved = FinishedMethod(path, fingerprint).load()
    assert saved["rows"] == [{"method": "M", "backdoor_after": 0.0}]
    assert saved["selections"][0]["chosen"] == 0.005 and saved["selections"][0]["test_score"] == 1.5
    assert FinishedMethod(path, fingerprint | {"candidates": 100}).load() is None  # other settings: recompute
    assert FinishedMethod(tmp_path / "absent.json", fingerprint).load() is None
    path.write_text(json.dumps({"rows": "x"}))
    with pytest.raises(ValueError, match="lacks its 'rows'"):
        FinishedMethod(path, fingerprint).load()
