"""FixedContextIndex: build invariants, calibration, atomic save / load, mismatch errors."""

from __future__ import annotations

import pytest
import torch

from framework.models.components.squeezed import FixedContextIndex, SqueezedAttention, serve
from tests.framework.models.components.squeezed.conftest import tiny_llama


def test_build_shapes_and_clustering(index, context, build_settings):
    meta = index.metadata
    n, w, s = context.shape[1], build_settings.observation_window, build_settings.attention_sinks
    assert meta.context_length == n and len(index.layers) == 2
    for layer in index.layers:
        assert layer.keys.shape == (1, 2, n, 16) and layer.values.shape == (1, 2, n, 16)
        assert layer.key_labels.shape == (2, n - w - s)
        c = layer.centroids.shape[1]
        assert c == int(0.1 * (n - w - s))
        # sizes count the labels; centroids are the mean of the RAW keys of each cluster
        assert torch.equal(layer.cluster_sizes, torch.stack([torch.bincount(l, minlength=c) for l in layer.key_labels]))
        raw = layer.keys[0, :, s : n - w].float()
        for h in range(2):
            for j in range(c):
                members = raw[h][layer.key_labels[h] == j]
                if len(members):
                    torch.testing.assert_close(layer.centroids[h, j], members.mean(0), rtol=1e-4, atol=1e-5)


def test_keys_match_a_dense_prefill(model, context, index):
    with torch.no_grad():
        cache = tiny_llama("sdpa")(input_ids=context, use_cache=True).past_key_values
    for i, layer in enumerate(index.layers):
        torch.testing.assert_close(layer.keys, cache.layers[i].keys)
        torch.testing.assert_close(layer.values, cache.layers[i].values)


def test_calibrated_thresholds_keep_the_requested_fraction(index):
    pool = index.fine_scores
    assert torch.all(pool[:-1] >= pool[1:])  # sorted descending
    for keep in (0.5, 0.3, 0.1):
        tau = index.metadata.fine_thresholds[keep]
        kept = int((pool > tau).sum())
        assert kept <= round(keep * pool.numel())
        assert kept >= round(keep * pool.numel()) - int((pool == tau).sum())
    assert index.threshold_for(1.0) == float("-inf")


def test_save_load_round_trip(tmp_path, model, context, index):
    path = index.save(tmp_path / "sub" / "index.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["index.pt"]  # no temp file left behind
    loaded = FixedContextIndex.load(path, model=model, context_ids=context)
    assert loaded.metadata == index.metadata
    for a, b in zip(loaded.layers, index.layers):
        for name in ("keys", "values", "centroids", "cluster_sizes", "key_labels"):
            assert torch.equal(getattr(a, name), getattr(b, name))
    question = torch.randint(3, 300, (1, 5))
    settings = SqueezedAttention(observation_window=16, attention_sinks=2, centroid_fraction=0.1, budget=0.3)
    with torch.no_grad():
        with serve(model, index, settings):
            x = model(input_ids=question, cache=index.new_cache(), use_cache=True).logits
        with serve(model, loaded, settings):
            y = model(input_ids=question, cache=loaded.new_cache(), use_cache=True).logits
    assert torch.equal(x, y)


def test_load_for_another_model_shape_is_an_error(tmp_path, index):
    path = index.save(tmp_path / "index.pt")
    other = tiny_llama(layers=3)
    with pytest.raises(ValueError, match="built for a model with"):
        FixedContextIndex.load(path, model=other)
    with pytest.raises(ValueError, match="built for a model with"):
        with serve(other, index, SqueezedAttention(observation_window=16, attention_sinks=2, centroid_fraction=0.1)):
            pass


def test_load_for_another_context_is_an_error(tmp_path, index, context):
    path = index.save(tmp_path / "index.pt")
    changed = context.clone()
    changed[0, 10] = (changed[0, 10] + 1) % 300
    with pytest.raises(ValueError, match="another fixed context"):
        FixedContextIndex.load(path, context_ids=changed)
    with pytest.raises(ValueError, match="another fixed context"):
        FixedContextIndex.load(path, context_ids=context[:, :-1])


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no fixed-context index"):
        FixedContextIndex.load(tmp_path / "nope.pt")


def test_context_shorter_than_observation_window_is_an_error(model):
    with pytest.raises(ValueError, match="observation window \\(100\\)"):
        FixedContextIndex.build(model, torch.randint(3, 300, (1, 80)), attention=SqueezedAttention(kmeans_iters=2))


def test_settings_that_disagree_with_the_index_are_errors(model, index):
    with pytest.raises(ValueError, match="observation_window=32"):
        with serve(model, index, SqueezedAttention(observation_window=32, attention_sinks=2, centroid_fraction=0.1)):
            pass
    with pytest.raises(ValueError, match="centroid_fraction=0.05"):
        with serve(model, index, SqueezedAttention(observation_window=16, attention_sinks=2)):
            pass
    with pytest.raises(ValueError, match="levels=2"):
        with serve(model, index, SqueezedAttention(observation_window=16, attention_sinks=2, centroid_fraction=0.1, levels=2)):
            pass


def test_two_level_index_serves_and_recounts(model, context):
    settings = SqueezedAttention(
        observation_window=16, centroid_fraction=0.1, coarse_fraction=0.03, levels=2, kmeans_iters=5, budget=1.0,
        coarse_keep=1.0,
    )
    index = FixedContextIndex.build(model, context, attention=settings)
    layer = index.layers[0]
    assert layer.coarse_centroids.shape[1] == int(0.03 * (160 - 16))
    # coarse sizes are the sums of their fine clusters
    for h in range(2):
        sums = torch.zeros(layer.coarse_sizes.shape[1], dtype=torch.int64).index_add_(
            0, layer.fine_to_coarse[h], layer.cluster_sizes[h]
        )
        assert torch.equal(sums, layer.coarse_sizes[h])
    ref = tiny_llama("sdpa")
    question = torch.randint(3, 300, (1, 5))
    with torch.no_grad():
        expected = ref(input_ids=torch.cat([context, question], 1)).logits[:, -5:]
        with serve(model, index, settings) as session:
            got = model(input_ids=question, cache=index.new_cache(), use_cache=True).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # two levels: fine + coarse centroids are charged
    c, c1 = layer.centroids.shape[1], layer.coarse_centroids.shape[1]
    assert session.budget().metadata_fraction == pytest.approx((c + c1) / (2 * 160))
