"""Strategy checks before training: callbacks refusing sharded strategies, FSDP wrapping of Transformers blocks."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, SingleDeviceStrategy
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from framework.callbacks.alphapruning import AlphaPruning
from framework.callbacks.hessian_probe import HessianProbe
from framework.distributed import TransformerBlockFSDPStrategy, check_callback_strategies, strategy_name
from framework.distributed.transformer_fsdp import default_wrap_policy, transformer_block_classes


def _bare(cls):
    return object.__new__(cls)  # a strategy instance without set-up (FSDP needs CUDA to construct normally)


def test_strategy_names_follow_the_lightning_base_class():
    assert strategy_name(_bare(FSDPStrategy)) == "fsdp"
    assert strategy_name(_bare(TransformerBlockFSDPStrategy)) == "fsdp"
    assert strategy_name(_bare(DDPStrategy)) == "ddp"
    assert strategy_name(SingleDeviceStrategy(device=torch.device("cpu"))) == "single_device"


@pytest.mark.parametrize("callback", [AlphaPruning(target_sparsity=0.5), HessianProbe()], ids=["alphapruning", "hessian"])
def test_callbacks_that_need_full_weights_refuse_fsdp_but_accept_ddp(callback):
    check_callback_strategies(_bare(DDPStrategy), [callback])
    with pytest.raises(ValueError, match=rf"{type(callback).__name__} does not support trainer.strategy=fsdp"):
        check_callback_strategies(_bare(FSDPStrategy), [callback])


def test_wrap_policy_finds_the_decoder_blocks_of_gpt2_and_llama():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=32, n_positions=16))
    llama = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=16, intermediate_size=32,
                                         num_attention_heads=2, num_key_value_heads=1, vocab_size=32))
    wrapper = torch.nn.ModuleDict({"lm": gpt2})  # e.g. a LightningModule holding the LM as an attribute
    assert {c.__name__ for c in transformer_block_classes(wrapper)} == {"GPT2Block"}
    assert {c.__name__ for c in transformer_block_classes(llama)} == {"LlamaDecoderLayer"}
    policy = default_wrap_policy(llama)
    assert {c.__name__ for c in policy._module_classes} == {"LlamaDecoderLayer"}


def test_fsdp_without_wrappable_layers_is_a_clear_error():
    with pytest.raises(ValueError, match="FSDP has no layers to wrap in Sequential"):
        default_wrap_policy(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_cli_refuses_a_callback_under_fsdp_before_training(run_cli, repo_root, capsys):
    # On a CPU machine Lightning itself refuses FSDP first (it needs CUDA); either way: one line, exit 2, no training.
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", repo_root / "tests/configs/toy_regression.yaml", "--trainer.strategy=fsdp",
                "--trainer.callbacks+=framework.callbacks.hessian_probe.HessianProbe")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "fsdp" in err.lower() and "Traceback" not in err
