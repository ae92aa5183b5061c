"""EnsembleClassifier: vmap-trained members equal separately trained ones, predictions, logging, checkpoints."""

from __future__ import annotations

import copy
import functools

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from framework.metrics.ensemble_polarization import ensemble_polarization_statistics
from framework.models.components.ensemble import LoopedMembers, SmallCNN, SmallMLP, StackedMembers, seeded_member_copies
from framework.models.ensemble_classifier import EnsembleClassifier


def _data(n=96, seed=0, k=10):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    return x, y


def _trainer(tmp_path, **kwargs):
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def _model(member=None, **kwargs):
    member = member or SmallCNN(width=4, depth=2)
    kwargs.setdefault("optimizer", functools.partial(torch.optim.Adam, lr=1e-2))
    return EnsembleClassifier(member=member, num_classes=10, **kwargs)


@pytest.mark.parametrize("member_factory", [lambda: SmallCNN(width=4, depth=2), lambda: SmallMLP(width=16, depth=2)])
def test_vmap_members_equal_separately_trained_members(tmp_path, member_factory):
    x, y = _data()
    seeds = [3, 11, 42]
    model = _model(member_factory(), seeds=seeds, num_members=3)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    _trainer(tmp_path, max_steps=6).fit(model, train_dataloaders=loader)
    for i, seed in enumerate(seeds):
        torch.manual_seed(seed)  # the plain way of training one member with this seed
        alone = member_factory()
        opt = torch.optim.Adam(alone.parameters(), lr=1e-2)
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(alone(xb), yb).backward()
            opt.step()
        trained = model.member(i).state_dict()
        for name, value in alone.state_dict().items():
            torch.testing.assert_close(trained[name], value, atol=2e-5, rtol=1e-4, msg=f"member {i} {name}")


def test_members_differ_and_do_not_depend_on_the_template_init():
    a = _model(SmallCNN(width=4), num_members=3)
    torch.manual_seed(999)
    b = _model(SmallCNN(width=4), num_members=3)
    for (na, pa), (nb, pb) in zip(a.members.named_parameters(), b.members.named_parameters()):
        torch.testing.assert_close(pa, pb)
        assert not torch.equal(pa[0], pa[1]), na


def test_forward_predict_and_loop_equivalence():
    x, y = _data(32)
    model = _model(num_members=4).eval()
    logits = model(x)
    assert logits.shape == (4, 32, 10)
    out = model.predict_step((x,), 0)
    assert out["member_predictions"].shape == (4, 32)
    counts = F.one_hot(out["member_predictions"], 10).sum(0)
    top = counts.max(dim=1).values
    assert torch.equal(counts.gather(1, out["majority_vote"][:, None]).squeeze(1), top)
    torch.testing.assert_close(out["mean_probabilities"], logits.softmax(-1).mean(0))
    looped = _model(num_members=4, joint="loop").eval()
    torch.testing.assert_close(looped(x), logits)
    assert isinstance(looped.members, LoopedMembers) and isinstance(model.members, StackedMembers)


def test_batch_norm_members_under_vmap_update_running_stats_per_member():
    x, _ = _data(32)
    members = seeded_member_copies(SmallCNN(width=4, batch_norm=True), [0, 1])
    stack = StackedMembers(copy.deepcopy(members))
    out = stack.train()(x)
    for i, member in enumerate(members):
        torch.testing.assert_close(out[i], member.train()(x))
        torch.testing.assert_close(stack.member_state_dict(i)["blocks.0.1.running_mean"], member.blocks[0][1].running_mean)


def test_fit_logs_polarization_metrics_and_histogram(tmp_path):
    x, y = _data(64)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    model = _model(num_members=3, predict_for_members=[9])
    logger = CSVLogger(tmp_path)
    trainer = _trainer(tmp_path, max_epochs=1, logger=logger, num_sanity_val_steps=0)
    trainer.fit(model, train_dataloaders=loader, val_dataloaders=loader)
    metrics = trainer.callback_metrics
    for key in ["polarization", "majority_vote_error", "disagreement", "disagreement_pairs", "both_wrong_disagreement",
                "bound_law", "c_bound", "competence_bound", "mean_probability_error", "predicted_majority_vote_error_M9"]:
        assert f"val/{key}" in metrics, key
        assert f"train/{key}" in metrics, key
    model.eval()
    with torch.no_grad():
        ref = ensemble_polarization_statistics(model(x), y)
    assert float(metrics["val/polarization"]) == pytest.approx(ref.polarization, rel=1e-6)
    assert float(metrics["val/majority_vote_error"]) == pytest.approx(ref.majority_vote_error)
    figures = list((tmp_path / "lightning_logs").rglob("val_w_histogram_*.png"))
    assert figures, "the W histogram was not logged"


def test_test_split_names_come_from_the_datamodule(tmp_path):
    x, y = _data(40)

    class TwoSplits(pl.LightningDataModule):
        test_split_names = ("test", "test_shifted")

        def test_dataloader(self):
            return [DataLoader(TensorDataset(x, y), batch_size=20), DataLoader(TensorDataset(x + 2, y), batch_size=20)]

    model = _model(num_members=3)
    results = _trainer(tmp_path).test(model, datamodule=TwoSplits(), verbose=False)
    keys = set(results[0]) | set(results[1])
    assert "test/polarization" in keys and "test_shifted/polarization" in keys


def test_checkpoint_round_trip_and_members_from_checkpoints(tmp_path):
    x, y = _data(32)
    model = _model(num_members=3)
    trainer = _trainer(tmp_path, max_steps=2)
    trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=16))
    path = tmp_path / "ensemble.ckpt"
    trainer.save_checkpoint(path)
    # weights_only=False: the Python-built model pickles its optimizer factory (a functools.partial) in hparams.
    restored = EnsembleClassifier.load_from_checkpoint(path, member=SmallCNN(width=4), weights_only=False).eval()
    torch.testing.assert_close(restored(x), model.eval()(x))

    # Members collected from checkpoints: one plain state_dict, two Lightning checkpoints wrapping the member.
    class Wrapper(pl.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.net = net

    paths = []
    for i in range(3):
        p = tmp_path / f"member{i}.pt"
        if i == 0:
            torch.save(model.member(i).state_dict(), p)
        else:
            torch.save({"state_dict": Wrapper(model.member(i)).state_dict(), "epoch": 1}, p)
        paths.append(str(p))
    collected = EnsembleClassifier(member=SmallCNN(width=4), num_classes=10, member_checkpoints=paths).eval()
    torch.testing.assert_close(collected(x), model(x))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_members": 1}, "num_members must be an integer >= 2, got 1"),
        ({"num_members": 3, "seeds": [1, 1, 2]}, "distinct seeds"),
        ({"num_members": 3, "seeds": [1, 2]}, "3 distinct seeds"),
        ({"joint": "threads"}, "joint must be one of"),
        ({"tie_rule": "coin"}, "tie_rule"),
        ({"predict_for_members": [0]}, "predict_for_members"),
        ({"member_checkpoints": ["a.ckpt"]}, "at least 2 checkpoints"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _model(**kwargs)


def test_missing_or_foreign_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        _model(member_checkpoints=[str(tmp_path / "nope.ckpt"), str(tmp_path / "nope.ckpt")])
    torch.save({"state_dict": {"other.weight": torch.zeros(2)}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="does not contain the member's weights"):
        _model(member_checkpoints=[str(tmp_path / "foreign.ckpt")] * 2)


def test_member_with_wrong_number_of_classes_fails_with_a_clear_error(tmp_path):
    x, y = _data(16)
    model = EnsembleClassifier(member=SmallCNN(width=4, num_classes=3), num_classes=10, num_members=2,
                               optimizer=functools.partial(torch.optim.Adam, lr=1e-3))
    with pytest.raises(ValueError, match="outputs 3 classes but num_classes=10"):
        _trainer(tmp_path, max_steps=1).fit(model, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=8))
