"""Issue 19 (problem 8): every figure the project draws has a title, labelled axes and, where colours mean
something, a legend (checked by ``figure_problems`` on each figure function with small synthetic inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.loggers import new_figure
from framework.loggers.figures import figure_problems


def _ensemble_stats():
    from framework.metrics import ensemble_polarization_statistics

    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (200,), generator=generator)
    preds = torch.where(torch.rand(5, 200, generator=generator) < 0.7, target, (target + 1) % 3)
    return ensemble_polarization_statistics(preds, target, num_classes=3)


def _w_histogram():
    from framework.models.components.ensemble.polarization_figures import w_histogram_figure

    return w_histogram_figure(_ensemble_stats(), title="val")


def _w_histogram_untitled():
    from framework.models.components.ensemble.polarization_figures import w_histogram_figure

    return w_histogram_figure(_ensemble_stats())


def _polarization_history():
    from framework.models.components.ensemble.polarization_figures import polarization_history_figure

    history = [{"epoch": e, "polarization": 1.2 + 0.05 * e, "majority_vote_error": 0.2 - 0.01 * e,
                "bound_law": 0.3 - 0.01 * e} for e in range(4)]
    return polarization_history_figure(history)


def _landscape(kind):
    from framework.callbacks.landscape import figures
    from framework.callbacks.landscape.merge_tree import sublevel_persistence

    axis = np.linspace(-1, 1, 9)
    a1, a2 = np.meshgrid(axis, axis, indexing="ij")
    losses = 1.0 + a1**2 + 0.5 * np.sin(3 * a2) ** 2
    if kind == "landscape_2d":
        return figures.landscape_figure([axis, axis], losses)
    if kind == "landscape_1d":
        return figures.landscape_figure([axis], losses[:, 4])
    if kind == "surface":
        return figures.surface_figure([axis, axis], losses)
    diagram = sublevel_persistence(losses)
    if kind == "persistence":
        return figures.persistence_diagram_figure(diagram)
    if kind == "merge_tree":
        return figures.merge_tree_figure(diagram)
    grid = np.linspace(-1, 5, 50)
    return figures.spectral_density_figure(grid, np.exp(-grid**2), eigenvalues=np.array([4.0, 3.0]))


def _esd():
    from framework.callbacks.pruning.esd_figure import esd_figure
    from framework.callbacks.pruning.spectral_metrics import weight_spectral_metrics

    generator = torch.Generator().manual_seed(0)
    weights = {f"layer{i}": torch.randn(256, 128, generator=generator) for i in range(2)}
    eigenvalues = {name: torch.linalg.eigvalsh(w.T @ w) for name, w in weights.items()}
    metrics = {name: weight_spectral_metrics(w) for name, w in weights.items()}
    return esd_figure(eigenvalues, metrics)


def _ssm_response():
    from framework.models.components.ssm.frequency_response import FrequencyResponse, response_figure

    omega = np.linspace(0, np.pi, 32)
    responses = {name: FrequencyResponse(omega, np.abs(np.random.default_rng(i).normal(size=(1, 2, 32))))
                 for i, name in enumerate(("layer 0", "layer 1"))}
    return response_figure(responses)


def _ssm_error():
    from framework.models.components.ssm.frequency_response import error_figure

    x = np.linspace(0, np.pi, 16)
    return error_figure({"S4D": (x, x**2), "S4D + Sobolev": (x, x)}, xlabel="ω (rad / sample)",
                        ylabel="MSE of the output", title="per-frequency error")


FIGURES = {
    "w_histogram": _w_histogram,
    "w_histogram_untitled": _w_histogram_untitled,
    "polarization_history": _polarization_history,
    **{k: (lambda k=k: _landscape(k)) for k in ("landscape_2d", "landscape_1d", "surface", "persistence",
                                                "merge_tree", "spectral_density")},
    "esd": _esd,
    "ssm_response": _ssm_response,
    "ssm_error": _ssm_error,
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_is_self_explaining(name):
    fig = FIGURES[name]()
    assert figure_problems(fig) == []


def test_w_histogram_legend_explains_the_colours_and_bars_start_at_zero():
    fig = _w_histogram()
    (ax,) = fig.axes
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any("majority wrong" in label for label in labels)
    assert any("majority right" in label for label in labels)
    assert ax.get_yscale() == "linear", "log-scale bars start at a cut baseline"
    assert all(patch.get_y() == 0 for patch in ax.patches)


def test_checker_flags_what_is_missing():
    fig = new_figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="red")
    ax.plot([0, 1], [1, 0], color="blue")
    problems = figure_problems(fig)
    assert any("no title" in p for p in problems)
    assert any("no x label" in p for p in problems) and any("no y label" in p for p in problems)
    assert any("no legend" in p for p in problems)
    ax.set(title="t", xlabel="x (s)", ylabel="y (m)")
    ax.legend(["up", "down"])
    assert figure_problems(fig) == []


def test_forecast_plot_is_self_explaining(tmp_path):
    from framework.callbacks.forecast_plots import ForecastPlots
    from framework.datamodules.retail_demand import RetailDemand
    from framework.models.spade import SPADEForecaster
    from tests.framework.models.test_spade import SMALL

    data = RetailDemand(cache_dir=str(tmp_path), **SMALL)
    data.setup()
    model = SPADEForecaster(num_features=data.num_features, context_length=28, horizon=7, num_forking=7)
    fig = ForecastPlots(num_series=2).figure(model, data.datasets["val"])
    assert figure_problems(fig) == []
