"""TinyMemLM: training through the CLI, regularizer wiring, memorization logging, checkpoints and bad checkpoints,
and tinymem_report against the functional metrics."""

from __future__ import annotations

import pytest
import torch

from framework.datamodules.tinymem_math import TinyMemMath
from framework.metrics.memorization import backdoor_success_rate, percent_memorized
from framework.models.components.tinymem.gpt2 import build_tinymem_gpt2, load_tinymem_gpt2
from framework.models.components.tinymem.regularizers import LossTruncation
from framework.models.tinymem_lm import TinyMemLM, sequence_losses, tinymem_report

SHRINK = ["--data.init_args.num_main=1200", "--data.init_args.num_extra=150", "--data.init_args.num_test=100",
          "--data.init_args.batch_size=16", "--model.init_args.k=5"]


def test_sequence_losses_match_transformers_loss():
    model = build_tinymem_gpt2(n_layers=1, n_embd=16, n_head=2, seed=0)
    ids = torch.randint(0, 14, (3, 20), generator=torch.Generator().manual_seed(0))
    out = model(input_ids=ids, labels=ids)
    per, count = sequence_losses(out.logits, ids)
    assert ((per * count).sum() / count.sum()).item() == pytest.approx(out.loss.item(), rel=1e-5)
    per_np, count_np = sequence_losses(out.logits, ids, ignore_index=13)
    assert (count_np == (ids[:, 1:] != 13).sum(1)).all()


def test_fit_logs_memorization_and_saves_a_loadable_checkpoint(run_cli, tmp_path, repo_root):
    cli = run_cli("fit", "--config", str(repo_root / "configs/tinymem/train_mult_backdoor_2layer.yaml"),
                  "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2",
                  "--trainer.check_val_every_n_epoch=1", "--trainer.accelerator=cpu",
                  f"--trainer.callbacks.init_args.dirpath={tmp_path}/ckpt", *SHRINK)
    logged = cli.trainer.callback_metrics
    for key in ("val/accuracy", "val/accuracy_no_pad", "val/perplexity", "val/c7/accuracy", "val/c5/perplexity",
                "val/backdoor_success", "train/loss"):
        assert key in logged, key
    assert 0.0 <= float(logged["val/backdoor_success"]) <= 100.0
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    model = load_tinymem_gpt2(ckpt, expected={"vocab_size": 14, "n_layer": 2})
    assert torch.equal(model.transformer.wte.weight, cli.model.model.transformer.wte.weight.cpu())
    with pytest.raises(ValueError, match="n_layer: checkpoint has 2, expected 4"):
        TinyMemLM(n_layers=4, init_checkpoint=str(ckpt))
    with pytest.raises(ValueError, match="vocab_size: checkpoint has 14, expected 259"):
        TinyMemLM(n_layers=2, vocab_size=259, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                  init_checkpoint=str(ckpt))
    tuned = TinyMemLM(n_layers=2, init_checkpoint=str(ckpt))
    assert torch.equal(tuned.model.transformer.wte.weight, model.transformer.wte.weight)


def test_report_agrees_with_the_functional_metrics():
    torch.manual_seed(0)
    noise = TinyMemMath(artifact="noise", num_main=1200, num_extra=150, num_test=100, num_noise=30)
    noise.setup()
    model = build_tinymem_gpt2(n_layers=1, n_embd=16, n_head=2, seed=0)
    report = tinymem_report(model, noise, prompt_len=50, k=10)
    assert report["percent_memorized"] == percent_memorized(model, noise.memorized_sequences,
                                                            noise.memorized_clean_sequences, prompt_len=50, k=10)
    assert set(report) >= {"c7/accuracy", "accuracy", "accuracy_no_pad", "perplexity", "seconds"}
    assert report["accuracy"] == pytest.approx(sum(report[f"c{c}/accuracy"] for c in (7, 2, 3, 4, 5)) / 5)
    backdoor = TinyMemMath(artifact="backdoor", num_main=1200, num_extra=150, num_test=100)
    backdoor.setup()
    report = tinymem_report(model, backdoor, k=5)
    seqs, _, prefix = backdoor.memorization_eval_set()
    assert report["backdoor_success"] == backdoor_success_rate(model, seqs, prefix, k=5)


def test_regularizer_is_used_in_training_step():
    lm = TinyMemLM(n_layers=1, n_embd=16, n_head=2, regularizer=LossTruncation(window=4, recompute_every=4))
    batch = {"input_ids": torch.randint(0, 14, (4, 150)), "example_id": torch.arange(4)}
    lm.training_step(batch, 0)
    assert int(lm.regularizer.seen) == 4
    with pytest.raises(ValueError, match="TrainRegularizer"):
        TinyMemLM(regularizer=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="prompt_len"):
        TinyMemLM(prompt_len=120, k=50)
