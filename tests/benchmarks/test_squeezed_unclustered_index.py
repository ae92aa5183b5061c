"""The needles and calibration suites serve baseline-only runs from an index built without k-means: every baseline
row must answer exactly as it does on the clustered index, and the two are cached under different names."""

from __future__ import annotations

import argparse

import torch

from benchmarks.squeezed_attention_accuracy import _build_indexes
from framework.models.components.squeezed.qa_evaluation import BASELINES
from framework.models.components.squeezed import serve
from tests.framework.models.components.squeezed.conftest import tiny_llama


def _logits(model, index, selector, question):
    with serve(model, index, selector):
        return model(input_ids=question, cache=index.new_cache(), use_cache=True).logits


def test_baselines_answer_the_same_on_the_unclustered_index(tmp_path):
    model = tiny_llama()
    ids = torch.randint(3, 300, (1, 200), generator=torch.Generator().manual_seed(4))
    args = argparse.Namespace(centroid_fraction=0.1, observation_window=16, attention_sinks=2, kmeans_iters=8)
    clustered, info_c = _build_indexes(model, ids, args, tmp_path, "ctx", names=("paper",))
    fast, info_f = _build_indexes(model, ids, args, tmp_path, "ctx", names=("paper",), clustered=False)
    assert (tmp_path / "ctx_paper.pt").is_file() and (tmp_path / "ctx_paper_unclustered.pt").is_file()
    a, b = clustered["paper"].layers[0], fast["paper"].layers[0]
    assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    assert not torch.equal(a.key_labels, b.key_labels)  # the clustering did differ
    question = torch.randint(3, 300, (1, 6), generator=torch.Generator().manual_seed(5))
    for name in ("oracle_topk", "quest", "pq_m16_sinks", "window_sinks", "random"):
        make = BASELINES[name]
        # tiny head dim 16: the 16-group quantizer becomes groups of one channel, still a valid PQ
        torch.testing.assert_close(_logits(model, fast["paper"], make(0.4), question),
                                   _logits(model, clustered["paper"], make(0.4), question), rtol=0, atol=0,
                                   msg=f"{name} differs on the unclustered index")
    # the second call loads each from its own file
    again, info = _build_indexes(model, ids, args, tmp_path, "ctx", names=("paper",), clustered=False)
    assert info["paper"]["loaded"].endswith("ctx_paper_unclustered.pt")
