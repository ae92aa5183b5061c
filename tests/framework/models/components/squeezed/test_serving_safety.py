"""Serving cannot silently go wrong: re-fed fixed contexts are refused, broken index files fail at `load`."""

from __future__ import annotations

import pytest
import torch
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers import DynamicCache

from framework.models.components.squeezed import FixedContextIndex, SqueezedAttention, serve
from framework.models.components.squeezed.index_file import MAGIC


def _settings(**kw) -> SqueezedAttention:
    return SqueezedAttention(observation_window=16, attention_sinks=2, centroid_fraction=0.1, kmeans_iters=8, **kw)


# ---------------------------------------------------------------- re-fed fixed context
def test_refeeding_the_context_without_the_index_cache_is_refused(model, context, index):
    question = torch.randint(3, 300, (1, 5), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), serve(model, index, _settings(budget=0.3)):
        with pytest.raises(ValueError, match=r"cache=index\.new_cache\(\)"):
            model(input_ids=torch.cat([context, question], 1))  # no cache at all
        with pytest.raises(ValueError, match="re-feeds"):
            model(input_ids=torch.cat([context, question], 1), cache=DynamicCache(), use_cache=True)


def test_generate_with_the_index_cache_still_works(model, context, index):
    prompt = torch.cat([context, torch.randint(3, 300, (1, 4), generator=torch.Generator().manual_seed(7))], 1)
    with torch.no_grad(), serve(model, index, _settings(budget=0.3)) as session:
        out = model.generate(input_ids=prompt, cache=index.new_cache(), max_new_tokens=3, do_sample=False)
    assert out.shape[1] == prompt.shape[1] + 3
    assert session.budget().lookups > 0


def test_drop_in_module_refuses_queries_inside_the_fixed_context(index):
    layer = index.layers[0]
    attn = _settings(budget=1.0).bind(index)
    q = torch.randn(1, 4, 3, 16)
    key, value = layer.keys, layer.values  # no dynamic positions, yet 3 queries
    with pytest.raises(ValueError, match="re-feeds"):
        attn(q, key, value, layer=layer, scale=0.25)


# ---------------------------------------------------------------- broken index files
@pytest.fixture()
def saved(tmp_path, index):
    return index.save(tmp_path / "index.pt")


def test_empty_file_fails_at_load(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt.*empty"):
        FixedContextIndex.load(path)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_file_fails_at_load(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=r"index\.pt.*truncated"):
        FixedContextIndex.load(saved)


def test_truncated_inside_the_header_fails_at_load(saved):
    saved.write_bytes(saved.read_bytes()[:12])
    with pytest.raises(ValueError, match=r"index\.pt"):
        FixedContextIndex.load(saved)


def test_foreign_file_fails_at_load(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)  # a torch file, but not an index
    with pytest.raises(ValueError, match=r"weights\.pt.*not a fixed-context index"):
        FixedContextIndex.load(path)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt.*not a fixed-context index"):
        FixedContextIndex.load(text)


@pytest.mark.parametrize("where", [0.3, 0.6, 0.95])
def test_flipped_bytes_fail_the_checksum_at_load(saved, where):
    data = bytearray(saved.read_bytes())
    pos = len(MAGIC) + 40 + int((len(data) - len(MAGIC) - 40) * where)
    data[pos] ^= 0x10
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"index\.pt.*checksum"):
        FixedContextIndex.load(saved)


def test_valid_container_with_missing_fields_is_one_value_error(tmp_path):
    from framework.models.components.squeezed.index_file import write_index_file

    path = write_index_file(tmp_path / "partial.pt", {"metadata": {"format_version": 2}})
    with pytest.raises(ValueError, match=r"partial\.pt.*not a valid fixed-context index"):
        FixedContextIndex.load(path)


# ---------------------------------------------------------------- build without the deprecated output field
def test_build_does_not_read_past_key_values(model, context, build_settings, monkeypatch):
    def _deprecated(self):
        raise AssertionError("build read the deprecated `past_key_values` output field")

    monkeypatch.setattr(CausalLMOutputWithPast, "past_key_values", property(_deprecated), raising=False)
    index = FixedContextIndex.build(model, context, attention=build_settings)
    assert index.layers[0].keys.shape[2] == context.shape[1]
