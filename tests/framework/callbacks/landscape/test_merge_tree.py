"""Union-find merge tree / 0-dim persistence against gudhi's cubical complex and a brute-force Betti curve."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from framework.callbacks.landscape.merge_tree import (MINIMUM, ROOT, SADDLE, grid_neighbours, neighbour_offsets,
                                            sublevel_persistence)
from framework.callbacks.landscape.topology_summary import finite_values, summarize

try:  # test-only dependency (dev extra); the brute-force checks below run without it
    import gudhi
except ImportError:  # pragma: no cover
    gudhi = None
needs_gudhi = pytest.mark.skipif(gudhi is None, reason="gudhi is not installed (pip install gudhi)")

#: Our neighbour rule -> gudhi construction with the same 0-dim connectivity.
GUDHI_CONSTRUCTION = {"axis": "vertices", "full": "top_dimensional_cells"}


def gudhi_pairs(values: np.ndarray, rule: str) -> np.ndarray:
    complex_ = gudhi.CubicalComplex(**{GUDHI_CONSTRUCTION[rule]: values})
    complex_.persistence()
    intervals = complex_.persistence_intervals_in_dimension(0)
    finite = intervals[np.isfinite(intervals[:, 1])]
    finite = finite[finite[:, 1] > finite[:, 0]]
    return finite[np.lexsort((finite[:, 1], finite[:, 0]))]


def our_pairs(values: np.ndarray, rule: str) -> np.ndarray:
    pairs = sublevel_persistence(values, neighbour_rule=rule).pairs
    pairs = pairs[pairs[:, 1] > pairs[:, 0]]
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def egg_crate(n: int = 41, k: int = 3) -> np.ndarray:
    """cos(kx)cos(ky)-style landscape with exactly known critical points on an odd grid."""
    a = np.linspace(-np.pi, np.pi, n)
    x, y = np.meshgrid(a, a, indexing="ij")
    return 2.0 + np.cos(k * x) * np.cos(k * y) + 0.01 * (x ** 2 + y ** 2)


@needs_gudhi
@pytest.mark.parametrize("rule", ["axis", "full"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_grids_match_gudhi(rule, seed):
    values = np.random.default_rng(seed).normal(size=(41, 41))
    np.testing.assert_allclose(our_pairs(values, rule), gudhi_pairs(values, rule))


@needs_gudhi
@pytest.mark.parametrize("rule", ["axis", "full"])
def test_smooth_random_field_matches_gudhi(rule):
    rng = np.random.default_rng(5)
    values = ndimage.gaussian_filter(rng.normal(size=(33, 29)), 2.0)
    np.testing.assert_allclose(our_pairs(values, rule), gudhi_pairs(values, rule))


@needs_gudhi
@pytest.mark.parametrize("rule", ["axis", "full"])
def test_hand_built_landscape_matches_gudhi_and_known_minima(rule):
    values = egg_crate()
    np.testing.assert_allclose(our_pairs(values, rule), gudhi_pairs(values, rule), atol=1e-12)


def test_two_wells_known_minima_saddle_and_persistence():
    # Two Gaussian wells of depth 1 and 2 on a flat plane at 0; the ridge between them sits at about -0.0.
    a = np.linspace(-3, 3, 61)
    x, y = np.meshgrid(a, a, indexing="ij")
    values = -1.0 * np.exp(-((x + 1.5) ** 2 + y ** 2) / 0.3) - 2.0 * np.exp(-((x - 1.5) ** 2 + y ** 2) / 0.3)
    values = values + 1e-3 * (x ** 2 + y ** 2)  # a bowl so the outside has no spurious minima
    for rule in ("axis", "freudenthal", "full"):
        diagram = sublevel_persistence(values, neighbour_rule=rule)
        summary = summarize(diagram)
        assert summary.n_minima == 2 and summary.n_saddles == 1
        (birth, death), = diagram.pairs
        assert birth == pytest.approx(values.reshape(-1)[diagram.birth_vertex[0]])
        assert birth == pytest.approx(values[np.abs(x + 1.5) < 1e-9].min(), abs=2e-2)
        assert diagram.essential_birth == pytest.approx(values.min())
        # The saddle value is the lowest ridge crossing between the wells (on the line y = 0 near x = 0).
        assert death == pytest.approx(values[30, 30], abs=0.02)
        tree = diagram.tree
        assert (tree.kind == MINIMUM).sum() == 2 and (tree.kind == SADDLE).sum() == 1 and (tree.kind == ROOT).sum() == 1
        saddle = np.flatnonzero(tree.kind == SADDLE)[0]
        assert set(np.flatnonzero(tree.parent == saddle)) == set(np.flatnonzero(tree.kind == MINIMUM))
        assert tree.value[tree.parent[saddle]] == pytest.approx(values.max())


def betti0_curve(values: np.ndarray, rule: str) -> np.ndarray:
    """Number of connected components of every sublevel set {f <= f_k}, by scipy's labelling (brute force)."""
    structure = np.zeros((3,) * values.ndim, dtype=bool)
    centre = (1,) * values.ndim
    structure[centre] = True
    for offset in neighbour_offsets(rule, values.ndim):
        structure[tuple(c + o for c, o in zip(centre, offset))] = True
    levels = np.unique(values)
    return np.asarray([ndimage.label(values <= level, structure=structure)[1] for level in levels])


@pytest.mark.parametrize("rule", ["axis", "freudenthal", "full"])
def test_betti_curve_matches_brute_force(rule):
    values = np.random.default_rng(7).normal(size=(15, 17))
    diagram = sublevel_persistence(values, neighbour_rule=rule)
    levels = np.unique(values)
    from_pairs = np.asarray([1 + int(((diagram.pairs[:, 0] <= lv) & (diagram.pairs[:, 1] > lv)).sum())
                             for lv in levels])
    np.testing.assert_array_equal(from_pairs, betti0_curve(values, rule))


def test_freudenthal_counts_lie_between_axis_and_full():
    values = np.random.default_rng(3).normal(size=(41, 41))
    counts = [summarize(sublevel_persistence(values, neighbour_rule=r)).n_minima for r in ("axis", "freudenthal", "full")]
    assert counts[0] >= counts[1] >= counts[2]


def test_neighbour_stencils():
    assert len(neighbour_offsets("axis", 2)) == 4
    assert len(neighbour_offsets("freudenthal", 2)) == 6
    assert len(neighbour_offsets("full", 2)) == 8
    assert len(neighbour_offsets("freudenthal", 3)) == 14
    neighbours = grid_neighbours((3, 3), "full")
    assert sorted(neighbours[4].tolist()) == [0, 1, 2, 3, 5, 6, 7, 8]
    assert sorted(n for n in neighbours[0].tolist() if n >= 0) == [1, 3, 4]


def test_one_dimensional_landscape():
    values = np.array([3.0, 1.0, 2.0, 0.0, 4.0, 0.5, 5.0])
    diagram = sublevel_persistence(values, neighbour_rule="freudenthal")
    pairs = sorted(map(tuple, diagram.pairs.tolist()))
    assert pairs == [(0.5, 4.0), (1.0, 2.0)]
    summary = summarize(diagram)
    assert summary.n_minima == 3 and summary.n_saddles == 2
    assert summary.total_persistence == pytest.approx(4.5)
    assert summary.average_persistence == pytest.approx(2.25)
    assert summary.max_persistence == pytest.approx(3.5)
    assert summary.loss_range == pytest.approx(5.0)
    assert summary.average_persistence_normalized == pytest.approx(0.45)
    assert summary.average_persistence_with_essential == pytest.approx((4.5 + 5.0) / 3)
    assert summary.n_minima_above_5pct == 3
    segmentation = diagram.segmentation
    assert segmentation[1] != segmentation[3]


def test_plateau_ties_do_not_count_as_minima():
    values = np.zeros((9, 9))
    summary = summarize(sublevel_persistence(values))
    assert summary.n_minima == 1 and summary.n_saddles == 0 and summary.total_persistence == 0.0


def test_relative_thresholds_and_log_persistence():
    values = np.array([1.0, 10.0, 9.0, 100.0, 1.0 + 1e-3, 200.0])
    summary = summarize(sublevel_persistence(values))
    # pairs: (9, 10) dies at the first ridge, (1.001, 100) at the second; range 199 -> 0.5 % and 50 %
    assert summary.n_minima == 3
    assert summary.n_minima_above_1pct == 2
    assert summary.n_minima_above_5pct == 2
    assert summary.average_persistence_log10 == pytest.approx(
        np.mean([np.log10(10 / 9), np.log10(100 / 1.001)]))


def test_monotone_transform_keeps_counts():
    values = np.random.default_rng(11).uniform(0.1, 10.0, size=(21, 21))
    a = summarize(sublevel_persistence(values))
    b = summarize(sublevel_persistence(np.log(values)))
    assert (a.n_minima, a.n_saddles) == (b.n_minima, b.n_saddles)


def test_nonfinite_values_are_replaced_and_reported():
    values = np.array([[1.0, np.nan], [np.inf, -np.inf]])
    cleaned, bad = finite_values(values)
    assert bad == 3
    assert cleaned.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="NaN or inf"):
        finite_values(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="NaN or inf"):
        sublevel_persistence(values)


def test_bad_neighbour_rule():
    with pytest.raises(ValueError, match="neighbour_rule"):
        sublevel_persistence(np.zeros((3, 3)), neighbour_rule="diagonal")
