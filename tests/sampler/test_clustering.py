from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.spatial.distance import squareform
from scipy.stats import gaussian_kde

from optuna_bocr.sampler._clustering import distance_matrix
from optuna_bocr.sampler._clustering import kde_densities
from optuna_bocr.sampler._clustering import silhouette
from optuna_bocr.sampler._clustering import structure_pvalue
from optuna_bocr.sampler._clustering import WardTree

GROUPS = [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9, 10, 11]]


def _planted_vectors(rng: np.random.Generator) -> np.ndarray:
    centres = np.array([[1.0, 10.0, 0.1], [5.0, 200.0, 0.5], [9.0, 50.0, 0.9]])
    rows = []
    for g, members in enumerate(GROUPS):
        for _ in members:
            rows.append(centres[g] * (1.0 + 0.02 * rng.standard_normal(3)))
    return np.array(rows)


def _planted_samples(rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for g, members in enumerate(GROUPS):
        for i in members:
            n = 200 + 37 * i
            offset = 10.0 * i  # The median shift must remove any location difference.
            if g == 0:
                s = rng.normal(0.0, 1.0, n)
            elif g == 1:
                s = rng.normal(0.0, 6.0, n)
            else:
                s = rng.exponential(0.3, n)
            out.append(s + offset)
    return out


def test_planted_groups_from_vectors() -> None:
    vectors = _planted_vectors(np.random.default_rng(0))
    tree = WardTree(distance_matrix(distance="st", vectors=vectors), len(vectors))
    assert tree.cut(3) == GROUPS


@pytest.mark.parametrize("distance", ["eu", "js"])
def test_planted_groups_from_samples(distance: str) -> None:
    samples = _planted_samples(np.random.default_rng(1))
    tree = WardTree(distance_matrix(distance=distance, samples=samples), len(samples))
    assert tree.cut(3) == GROUPS


@pytest.mark.parametrize("distance", ["eu", "js"])
def test_identical_distributions_have_distance_zero(distance: str) -> None:
    base = np.random.default_rng(2).normal(size=300)
    other = np.random.default_rng(3).normal(size=300) * 4.0
    samples = [base, base + 7.5, other]  # Same shape, shifted: the median shift removes it.
    d = squareform(distance_matrix(distance=distance, samples=samples))
    # Only rounding is left (the JS distance is a square root, so it magnifies it).
    assert d[0, 1] == pytest.approx(0.0, abs=1e-6)
    assert d[0, 2] > 0.05


def test_kde_grid_covers_wide_distributions() -> None:
    samples = [np.linspace(-1000.0, 1000.0, 101), np.linspace(-1.0, 1.0, 101)]
    grid, dens = kde_densities(samples)
    assert grid[0] < -1000.0 and grid[-1] > 1000.0
    step = grid[1] - grid[0]
    # Nothing is truncated: each density integrates to about 1 on the grid.
    np.testing.assert_allclose(dens[0].sum() * step, 1.0, atol=0.02)


def test_point_mass_samples_are_handled() -> None:
    samples = [np.array([3.0]), np.full(10, 2.0), np.random.default_rng(0).normal(size=50)]
    d = squareform(distance_matrix(distance="eu", samples=samples))
    assert np.all(np.isfinite(d))
    assert d[0, 1] == pytest.approx(0.0, abs=1e-12)  # Both point masses at their median.
    assert d[0, 2] > 0.0


def test_st_distance_is_invariant_to_column_scale() -> None:
    vectors = _planted_vectors(np.random.default_rng(4))
    scaled = vectors * np.array([1000.0, 0.001, 1.0])
    np.testing.assert_allclose(
        distance_matrix(distance="st", vectors=vectors),
        distance_matrix(distance="st", vectors=scaled),
    )
    zero_col = np.hstack([vectors, np.zeros((len(vectors), 1))])
    assert np.all(np.isfinite(distance_matrix(distance="st", vectors=zero_col)))


def test_cuts_of_one_tree_are_nested() -> None:
    vectors = np.random.default_rng(5).normal(size=(15, 4))
    tree = WardTree(distance_matrix(distance="st", vectors=vectors), 15)
    for k in range(1, 15):
        coarse, fine = tree.cut(k), tree.cut(k + 1)
        assert len(coarse) == k and len(fine) == k + 1
        assert sorted(i for g in fine for i in g) == list(range(15))
        for g in fine:  # Every fine cluster lies inside one coarse cluster.
            assert any(set(g) <= set(c) for c in coarse)


def test_cut_errors_and_single_item() -> None:
    tree = WardTree(distance_matrix(distance="st", vectors=np.eye(3)), 3)
    with pytest.raises(ValueError, match="clusters"):
        tree.cut(4)
    with pytest.raises(ValueError, match="clusters"):
        tree.cut(0)
    assert WardTree(np.zeros(0), 1).cut(1) == [[0]]
    with pytest.raises(ValueError, match="distance"):
        distance_matrix(distance="manhattan", vectors=np.eye(3))


def test_kde_matches_scipy_gaussian_kde() -> None:
    rng = np.random.default_rng(6)
    samples = [rng.normal(size=40), rng.exponential(2.0, size=300)]
    grid, dens = kde_densities(samples)
    for s, row in zip(samples, dens, strict=True):
        expected = gaussian_kde(s - np.median(s), bw_method="scott")(grid)
        np.testing.assert_allclose(row, expected, rtol=1e-10, atol=1e-14)


def test_js_distance_matches_scipy_pairwise_base_2() -> None:
    samples = _planted_samples(np.random.default_rng(7))
    grid, dens = kde_densities(samples)
    probs = dens / dens.sum(axis=1, keepdims=True)
    d = squareform(distance_matrix(distance="js", samples=samples))
    assert d[0, 5] == pytest.approx(jensenshannon(probs[0], probs[5], base=2.0), abs=1e-9)
    assert d.max() <= 1.0


def test_silhouette_of_planted_and_of_arbitrary_groups() -> None:
    vectors = _planted_vectors(np.random.default_rng(8))
    condensed = distance_matrix(distance="st", vectors=vectors)
    assert silhouette(condensed, GROUPS) > 0.8
    # The same sizes, but every group mixes the planted ones: negative widths.
    mixed = [[0, 4, 7, 8], [1, 5, 9], [2, 3, 6, 10, 11]]
    assert silhouette(condensed, mixed) < 0.0


@pytest.mark.parametrize("distance", ["eu", "js"])
def test_structure_test_on_samples(distance: str) -> None:
    planted = _planted_samples(np.random.default_rng(9))
    assert structure_pvalue(distance=distance, n_clusters=3, samples=planted) == 0.05
    # One distribution for every parameter: a valid test says "structure" (p <= 0.05) for
    # about 1 data set in 20; allow up to 4 of 20 (a broken null would flag them all).
    flagged = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        same = [rng.gamma(2.0, 1.0, size=64) for _ in range(12)]
        flagged += structure_pvalue(distance=distance, n_clusters=3, samples=same) <= 0.05
    assert flagged <= 4


def test_structure_test_on_vectors() -> None:
    planted = _planted_vectors(np.random.default_rng(11))
    assert structure_pvalue(distance="st", n_clusters=3, vectors=planted) == 0.05
    flagged = sum(
        structure_pvalue(
            distance="st", n_clusters=3, vectors=np.random.default_rng(seed).random((12, 7))
        )
        <= 0.05
        for seed in range(20)
    )
    assert flagged <= 4
    # No parameter differs: nothing to group (every null ties the observed silhouette).
    assert structure_pvalue(distance="st", n_clusters=3, vectors=np.ones((12, 7))) == 1.0
