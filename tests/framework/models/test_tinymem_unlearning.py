import pytest
import torch

from framework.models.components.tinymem.gpt2 import build_tinymem_gpt2, load_tinymem_gpt2
from framework.models.components.tinymem.unlearning import Durable, mlp_weight_parameters, locate_mlp_blocks
from framework.models.tinymem_unlearning import MemorizationUnlearning, save_model_atomically


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    from framework.datamodules.tinymem_math import TinyMemMath

    dm = TinyMemMath(family="mult", artifact="backdoor", num_main=1200, num_extra=120, num_test=40, k=5,
                     cache_dir=str(tmp_path_factory.mktemp("cache")))
    dm.prepare_data()
    dm.setup("test")
    return dm


def _checkpoint(tmp_path, **kwargs):
    model = build_tinymem_gpt2(n_layers=1, n_embd=32, n_head=4, seed=0, **kwargs)
    return str(save_model_atomically(model, tmp_path / "ckpt"))


def test_edits_only_mlp_weights_reports_before_and_saves(tmp_path, datamodule):
    path = _checkpoint(tmp_path)
    module = MemorizationUnlearning(checkpoint=path, method=Durable(ratio=0.05), memorized_set="artifact",
                                    clean_pool_size=20, output_dir=str(tmp_path / "edited"), k=5)
    assert module.model.config.n_layer == 1 and module.model.config.n_embd == 32  # read from the checkpoint
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    result = module.run_unlearning(datamodule)
    assert result.method == "Durable" and result.edited > 0
    assert module.memorized_set_size == len(datamodule.memorized_sequences)
    assert module.clean_pool_size_used == 20
    assert {"accuracy", "backdoor_success"} <= set(module.before)
    mlp = set(mlp_weight_parameters(locate_mlp_blocks(module.model)))
    for name, p in module.model.named_parameters():
        if name not in mlp:
            assert torch.equal(p, before[name])
    save_model_atomically(module.model, tmp_path / "edited")
    reloaded = load_tinymem_gpt2(tmp_path / "edited")
    for name, p in reloaded.named_parameters():
        torch.testing.assert_close(p, dict(module.model.named_parameters())[name])


def test_bad_inputs_raise(tmp_path, datamodule):
    path = _checkpoint(tmp_path)
    with pytest.raises(ValueError, match="method must be an UnlearningMethod"):
        MemorizationUnlearning(checkpoint=path, method="BalancedSubnet")
    with pytest.raises(ValueError, match="memorized_set"):
        MemorizationUnlearning(checkpoint=path, method=Durable(ratio=0.1), memorized_set="noise")
    with pytest.raises(ValueError, match="vocab"):
        MemorizationUnlearning(checkpoint=_checkpoint(tmp_path / "v", vocab_size=20), method=Durable(ratio=0.1))
    with pytest.raises(FileNotFoundError):
        MemorizationUnlearning(checkpoint=str(tmp_path / "missing.ckpt"), method=Durable(ratio=0.1))
    # An untrained model reproduces no backdoor: the memorized set is empty.
    module = MemorizationUnlearning(checkpoint=path, method=Durable(ratio=0.1), memorized_set="memorized", k=5)
    with pytest.raises(ValueError, match="memorized set is empty"):
        module.run_unlearning(datamodule)
