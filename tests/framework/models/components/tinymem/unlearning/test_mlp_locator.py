import pytest
import torch
from torch import nn

from framework.models.components.tinymem.unlearning import locate_mlp_blocks, mlp_weight_parameters, neuron_hook
from tests.framework.models.components.tinymem.unlearning.conftest import tiny_gpt2, tiny_llama


def test_gpt2_blocks_are_conv1d_mlps():
    model = tiny_gpt2()
    blocks = locate_mlp_blocks(model)
    assert [b.name for b in blocks] == ["transformer.h.0.mlp", "transformer.h.1.mlp"]
    assert all(b.inner_dim == 32 for b in blocks)
    assert list(blocks[0].weights()) == ["transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_proj.weight"]
    assert blocks[1].output_weights().shape == (32, 16)


def test_llama_blocks_are_gated_linear_mlps():
    model = tiny_llama()
    blocks = locate_mlp_blocks(model, layers=[-1])
    assert [b.name for b in blocks] == ["model.layers.1.mlp"]
    assert list(blocks[0].weights()) == [f"model.layers.1.mlp.{n}.weight" for n in ("gate_proj", "up_proj", "down_proj")]
    assert blocks[0].inner_dim == 24
    torch.testing.assert_close(blocks[0].output_weights(), model.model.layers[1].mlp.down_proj.weight.t())
    assert len(mlp_weight_parameters(locate_mlp_blocks(model))) == 6


@pytest.mark.parametrize("factory", [tiny_gpt2, tiny_llama])
def test_zero_neurons_silences_exactly_those_neurons(factory):
    model = factory()
    block = locate_mlp_blocks(model)[0]
    ids = torch.randint(0, 14, (3, 10))
    seen = {}

    def keep(a):
        seen["a"] = a.detach().clone()
        return a

    with neuron_hook(block, keep):
        model(input_ids=ids)
    before = seen["a"]
    assert (before[..., [1, 5]] != 0).any()
    block.zero_neurons(torch.tensor([1, 5]))
    with neuron_hook(block, keep):
        model(input_ids=ids)
    after = seen["a"]
    assert (after[..., [1, 5]] == 0).all()
    # Other neurons of the first block see the same inputs, so they are unchanged.
    others = [i for i in range(block.inner_dim) if i not in (1, 5)]
    torch.testing.assert_close(after[..., others], before[..., others])


def test_unsupported_model_and_bad_layers_raise():
    with pytest.raises(ValueError, match="no MLP block"):
        locate_mlp_blocks(nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(ValueError, match="layers must hold integers"):
        locate_mlp_blocks(tiny_gpt2(), layers=[2])
    with pytest.raises(ValueError, match="twice"):
        locate_mlp_blocks(tiny_gpt2(), layers=[0, -2])
