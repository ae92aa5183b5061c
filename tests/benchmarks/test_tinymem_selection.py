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


def test_model_exposures_computed_once_per_setting_and_checked(tmp_path):
    import numpy as np

    from benchmarks.tinymem_selection import model_exposures

    calls = []

    def compute():
        calls.append(1)
        return {"reference": np.array([0.5, 1.0]), "base": np.array([13.0, 12.5])}

    path, fingerprint = tmp_path / "exposures.json", {"candidates": 10, "exposure_prompts": 2, "seed": 0}
    ref, base = model_exposures(path, fingerprint, compute)
    ref2, base2 = model_exposures(path, fingerprint, compute)
    assert len(calls) == 1 and ref2.tolist() == [0.5, 1.0] and base2.tolist() == [13.0, 12.5]
    model_exposures(path, fingerprint | {"candidates": 20}, compute)  # another setting: recomputed
    assert len(calls) == 2
    path.write_text('{"fingerprint": 1, "reference": "x"}')
    with pytest.raises(ValueError, match="exposure cache .* is damaged"):
        model_exposures(path, fingerprint, compute)


def test_exposures_match_whole_row_scoring_on_both_paths():
    """The chunked choice of path (prefix tree with early stop vs whole rows) gives the exact exposure."""
    import torch

    from benchmarks.tinymem_selection import exposures
    from framework.metrics.memorization import continuation_nll, exposure_from_nll
    from framework.models.components.tinymem.gpt2 import build_tinymem_gpt2

    torch.manual_seed(0)
    model = build_tinymem_gpt2(n_layers=1, n_embd=16, n_head=2, context_length=32).eval()
    prefix, window = torch.randint(0, 14, (6,)), torch.tensor([1, 2, 3, 11, 4, 5])
    pool = window.repeat(1000, 1)
    pool[:, window < 10] = torch.randint(0, 10, (1000, 5))
    likely = pool[continuation_nll(model, prefix[None], pool, use_cache=False).argmin()]  # the prefix-tree path
    for window, candidates in [(window, 100), (window, 600), (likely, 600)]:  # below / above one chunk
        got = exposures(model, [(prefix, window)], candidates=candidates, seed=3, device="cpu")[0]
        g = torch.Generator().manual_seed(3 * 100_003)
        digits = window < 10
        cands = window.repeat(candidates, 1)
        cands[:, digits] = torch.randint(0, 10, (candidates, int(digits.sum())), generator=g)
        cands = cands[~(cands == window).all(dim=1)]
        nll = continuation_nll(model, prefix[None], cands, use_cache=False)
        want = exposure_from_nll(continuation_nll(model, prefix[None], window[None]), nll)[0]
        assert abs(got - float(want)) < 1e-9


def test_weights_digest_tells_retrained_models_apart(tmp_path):
    from benchmarks.tinymem_selection import weights_digest

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "model.safetensors").write_bytes(b"weights one")
    (tmp_path / "b" / "model.safetensors").write_bytes(b"weights two")
    assert weights_digest(tmp_path / "a") == weights_digest(tmp_path / "a")
    assert weights_digest(tmp_path / "a") != weights_digest(tmp_path / "b")


def test_secret_nll_per_token_matches_a_manual_log_softmax_and_its_columns():
    import torch

    from benchmarks.tinymem_selection import secret_nll_columns, secret_nll_per_token
    from framework.models.components.tinymem.gpt2 import build_tinymem_gpt2

    torch.manual_seed(0)
    model = build_tinymem_gpt2(n_layers=1, n_embd=16, n_head=2, context_length=32).eval()
    windows = [(torch.randint(0, 14, (5,)), torch.randint(0, 14, (4,))) for _ in range(3)]
    got = secret_nll_per_token(model, windows, device="cpu")
    for (prefix, window), value in zip(windows, got):
        ids = torch.cat([prefix, window])[None]
        logits = model(ids)
        logits = getattr(logits, "logits", logits)[0].double()
        logp = torch.log_softmax(logits[len(prefix) - 1:-1], dim=-1)
        want = -logp[torch.arange(len(window)), window].mean()
        assert abs(value - float(want)) < 1e-5
    same = secret_nll_columns(model, windows, got, "cpu")  # equal to the reference: a tie, "removed"
    assert same["removed_by_nll"] and abs(same["secret_nll"] - got.mean()) < 1e-12
    lower = secret_nll_columns(model, windows, got + 5.0, "cpu")  # far below the reference: still memorized
    assert not lower["removed_by_nll"]


def test_backfill_secret_nll_retrains_only_rows_without_the_column():
    """Rows reported before the secret-NLL column are re-trained with their own knobs (the paper's elsewhere) and
    get the column plus a note comparing the re-trained test backdoor rate with the reported one; others stay."""
    from benchmarks.tinymem_selection import backfill_secret_nll

    paper = {"ratio": 0.01, "epochs": 10, "lr": 1e-5}
    done = {"method": "M", "setting": "paper", "ratio": 0.01, "backdoor_after": 5.0, "secret_nll": 3.0}
    old = {"method": "M", "setting": "validated", "ratio": 0.005, "epochs": 1, "backdoor_after": 0.0,
           "shard": "ignored: not a knob"}
    rows = [dict(done), old]
    trained = []

    def retrain(kwargs):
        trained.append(kwargs)
        return f"model{len(trained)}"

    changed = backfill_secret_nll("M", rows, paper, retrain=retrain, test_backdoor=lambda model: 0.83,
                                  columns=lambda model: {"secret_nll": 2.5, "from_model": model}, device="cpu")
    assert changed and rows[0] == done  # the row that had the column is untouched
    assert trained == [{"ratio": 0.005, "epochs": 1, "lr": 1e-5}]  # row's knobs over the paper's; no extra keys
    assert rows[1]["secret_nll"] == 2.5 and rows[1]["from_model"] == "model1"
    assert rows[1]["secret_nll_from"] == "re-trained on cpu for this column: test backdoor 0.83 % (reported 0.00 %)"
    # a second pass finds nothing to do and trains nothing
    assert not backfill_secret_nll("M", rows, paper, retrain=retrain, test_backdoor=lambda model: 0.0,
                                   columns=lambda model: {}, device="cpu")
    assert len(trained) == 1
