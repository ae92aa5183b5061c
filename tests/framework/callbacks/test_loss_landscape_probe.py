"""LossLandscapeProbe on Lightning's BoringModel: grid JSON, topology, restoration, Hessian directions, bad input."""

from __future__ import annotations

import copy
import json

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger

from framework.callbacks.landscape.merge_tree import sublevel_persistence
from framework.callbacks.landscape.parameter_vectors import ParameterSpace
from framework.callbacks.landscape.topology_summary import summarize
from framework.callbacks.loss_landscape_probe import LossLandscapeProbe, landscape_report


def _trainer(tmp_path, callbacks, **kwargs):
    options = dict(max_epochs=1, limit_train_batches=3, limit_val_batches=1, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                   default_root_dir=tmp_path, callbacks=callbacks)
    options.update(kwargs)
    return pl.Trainer(**options)


def _batch():
    return torch.randn(8, 32, generator=torch.Generator().manual_seed(0))


def test_grid_json_summaries_and_restoration(tmp_path):
    model = BoringModel()
    batch = _batch()
    probe = LossLandscapeProbe(resolution=7, grid_range=0.5, probe_data=[batch], output_dir=str(tmp_path / "out"))
    trainer = _trainer(tmp_path, [probe])
    trainer.fit(model)
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer_state = copy.deepcopy(trainer.optimizers[0].state_dict())
    report = probe.run(trainer, model, tag="manual")
    for a, b in zip(before, model.parameters()):
        assert torch.equal(a, b)  # bit-exact
    assert str(optimizer_state) == str(trainer.optimizers[0].state_dict())
    assert model.training
    # Centre of the odd grid = the loss at the trained weights.
    with torch.no_grad():
        expected = float(model.loss(model(batch)))
    assert report.grid.losses[3, 3].item() == pytest.approx(expected, rel=1e-6)
    assert report.center_loss == pytest.approx(expected, rel=1e-6)
    files = sorted((tmp_path / "out").glob("landscape-manual-step*.json"))
    payload = json.loads(files[-1].read_text())
    losses = np.asarray(payload["losses"])
    assert losses.shape == (7, 7)
    np.testing.assert_allclose(payload["axes"][0], np.linspace(-0.5, 0.5, 7))
    assert payload["settings"]["neighbour_rule"] == "freudenthal"
    # The JSON lets the topology be recomputed without the model.
    for rule in ("axis", "freudenthal", "full"):
        again = summarize(sublevel_persistence(losses, neighbour_rule=rule))
        assert again.as_dict() == pytest.approx(payload["summaries"][rule], nan_ok=True)
    assert report.summary.neighbour_rule == "freudenthal"


def test_directions_are_filter_normalized_random_by_default(tmp_path):
    model = BoringModel()
    report = landscape_report(model, [_batch()], resolution=3, grid_range=1.0, seed=4)
    space = ParameterSpace.of(model)
    parts = space.unflatten(report.directions[0])
    weight = model.layer.weight.detach()
    torch.testing.assert_close(parts["layer.weight"].norm(dim=1), weight.norm(dim=1), rtol=1e-5, atol=1e-7)
    assert torch.count_nonzero(parts["layer.bias"]) == 0
    again = landscape_report(model, [_batch()], resolution=3, grid_range=1.0, seed=4)
    torch.testing.assert_close(report.directions, again.directions)


def test_hessian_directions_are_unit_eigenvectors(tmp_path):
    model = BoringModel()
    batch = _batch()
    report = landscape_report(model, [batch], dims=2, resolution=5, grid_range=0.1, directions="hessian",
                              hessian_max_iter=300, hessian_tol=1e-8)
    d = report.directions.double()
    torch.testing.assert_close(d @ d.T, torch.eye(2, dtype=torch.float64), atol=1e-4, rtol=0)
    # H d = λ d for the top eigenpair (dense Hessian of the same loss).
    space = ParameterSpace.of(model)
    theta = space.flat_parameters(model)

    def f(flat):
        return model.loss(torch.func.functional_call(model, space.unflatten(flat), (batch,)))

    hessian = torch.autograd.functional.hessian(f, theta).double()
    value = report.eigenvalues[0]
    assert (hessian @ d[0] - value * d[0]).norm() < 1e-2 * abs(value)
    assert report.scalars()["direction_eigenvalue_1"] == pytest.approx(value)


def test_one_dimensional_probe_with_user_loss_and_logging(tmp_path):
    model = BoringModel()
    logger = CSVLogger(tmp_path, name="run")

    def loss_fn(module, batch):
        return (module(batch) ** 2).mean()

    probe = LossLandscapeProbe(dims=1, resolution=9, loss_fn=loss_fn, epochs=[0], at_fit_end=False)
    _trainer(tmp_path, [probe], logger=logger).fit(model)
    logger.save()
    report = probe.reports[-1]
    assert report.grid.losses.shape == (9,)
    text = (tmp_path / "run" / "version_0" / "metrics.csv").read_text()
    for key in ("landscape/n_minima", "landscape/n_saddles", "landscape/average_persistence_normalized",
                "landscape/total_persistence", "landscape/max_persistence", "landscape/loss_range"):
        assert key in text
    figures = {p.name.split("_step")[0] for p in (tmp_path / "run" / "version_0" / "figures").glob("*.png")}
    assert figures == {"landscape_line", "landscape_persistence_diagram", "landscape_merge_tree"}
    hparams = (tmp_path / "run" / "version_0" / "hparams.yaml").read_text()
    assert "landscape/neighbour_rule: freudenthal" in hparams
    jsons = list((tmp_path / "run" / "version_0" / "probes").rglob("landscape-epoch0-*.json")) + \
        list((tmp_path / "run").rglob("landscape-epoch0-*.json"))
    assert jsons


def test_two_dimensional_figures(tmp_path):
    model = BoringModel()
    logger = CSVLogger(tmp_path, name="run")
    probe = LossLandscapeProbe(resolution=5, neighbour_rule="axis")
    _trainer(tmp_path, [probe], logger=logger).fit(model)
    figures = {p.name.split("_step")[0] for p in (tmp_path / "run" / "version_0" / "figures").glob("*.png")}
    assert figures == {"landscape_contour", "landscape_surface", "landscape_persistence_diagram",
                       "landscape_merge_tree"}
    assert probe.reports[-1].summary.neighbour_rule == "axis"


def test_two_probes_coexist_with_distinct_state(tmp_path):
    a = LossLandscapeProbe(resolution=3)
    b = LossLandscapeProbe(resolution=3, directions="hessian")
    assert a.state_key != b.state_key
    _trainer(tmp_path, [a, b]).fit(BoringModel())
    assert len(a.history) == len(b.history) == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"resolution": 2}, "resolution"),
    ({"resolution": 1}, "resolution"),
    ({"resolution": 4}, "odd"),
    ({"grid_range": 0.0}, "grid_range"),
    ({"grid_range": -1.0}, "grid_range"),
    ({"dims": 3}, "dims"),
    ({"directions": "pca"}, "directions"),
    ({"neighbour_rule": "knn"}, "neighbour_rule"),
    ({"normalization": "unit"}, "normalization"),
    ({"batching": "threads"}, "batching"),
    ({"probe_batches": 0}, "probe_batches"),
    ({"probe_data": []}, "probe_data is empty"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LossLandscapeProbe(**kwargs)


def test_model_without_usable_loss_and_empty_probe_set():
    with pytest.raises(ValueError, match="no training_step"):
        landscape_report(torch.nn.Linear(32, 2), [_batch()], resolution=3)
    with pytest.raises(ValueError, match="probe set is empty"):
        landscape_report(BoringModel(), [], resolution=3)
    with pytest.raises(ValueError, match="resolution"):
        landscape_report(BoringModel(), [_batch()], resolution=2)
    with pytest.raises(ValueError, match="range"):
        landscape_report(BoringModel(), [_batch()], resolution=3, grid_range=0.0)
