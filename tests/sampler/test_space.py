"""One stage's clusters and its three coordinate systems."""

from __future__ import annotations

import numpy as np
import pytest

from optuna_bocr.sampler._space import StageSpace

LOWS = np.array([0.1, 0.1, 0.2, 0.0, 0.5])
HIGHS = np.array([1.0, 0.8, 1.0, 1.0, 0.9])
CLUSTERS = [[0, 1, 2], [3, 4]]


def test_clusters_give_means_and_union_ranges() -> None:
    space = StageSpace.from_clusters(CLUSTERS, LOWS, HIGHS)
    assert space.dim == 2
    assert space.member_cluster.tolist() == [0, 0, 0, 1, 1]
    np.testing.assert_allclose(space.cluster_lows, [0.1, 0.0])
    np.testing.assert_allclose(space.cluster_highs, [1.0, 1.0])
    params = np.array([[0.3, 0.6, 0.9, 0.2, 0.8]])
    np.testing.assert_allclose(space.cluster_values(params), [[0.6, 0.5]])


def test_unit_round_trip_and_clipping_to_each_parameters_range() -> None:
    space = StageSpace.from_clusters(CLUSTERS, LOWS, HIGHS).with_bounds([0.2, 0.4], [0.6, 0.8])
    unit = np.array([[0.5, 0.25], [0.0, 1.0]])
    np.testing.assert_allclose(space.unit_to_clusters(unit), [[0.4, 0.5], [0.2, 0.8]])
    params = space.unit_to_params(unit)
    # Every member gets its cluster's value, clipped to its own range (p2 >= 0.2, p4 >= 0.5).
    np.testing.assert_allclose(params[0], [0.4, 0.4, 0.4, 0.5, 0.5])
    np.testing.assert_allclose(params[1], [0.2, 0.2, 0.2, 0.8, 0.8])
    np.testing.assert_allclose(space.to_unit(params[:1]), [[0.5, 0.25]])
    # Points outside the stage's bounds map outside the unit cube (not clipped).
    outside = space.to_unit(np.array([[1.0, 1.0, 1.0, 0.0, 0.5]]))
    np.testing.assert_allclose(outside, [[2.0, -0.375]])


def test_bounds_must_have_one_entry_per_cluster() -> None:
    space = StageSpace.from_clusters(CLUSTERS, LOWS, HIGHS)
    with pytest.raises(ValueError, match="one per cluster"):
        space.with_bounds([0.1, 0.2, 0.3], [0.5, 0.6, 0.7])
