"""The benchmarks' BOCR variants build the samplers their names promise."""

from __future__ import annotations

import numpy as np
from optuna.distributions import FloatDistribution
import pytest

from benchmarks import _common as common
from optuna_bocr import BOCRSampler

NAMES = [f"layer{i}" for i in range(9)]
SPACE = {n: FloatDistribution(0.1, 1.0) for n in NAMES}
# Three tight, well separated groups of three: the features' clusters are {0,1,2}, {3,4,5}, ...
FEATURES = {n: np.array([float(i // 3), 0.01 * i]) for i, n in enumerate(NAMES)}


def _make(method: str, seed: int = 0) -> BOCRSampler:
    sampler, settings = common.make_sampler(
        method, seed=seed, search_space=SPACE, features=FEATURES, n_trials=60, distance="st"
    )
    assert isinstance(sampler, BOCRSampler)
    assert settings["class"] == "BOCRSampler"
    return sampler


def test_defaults_cluster_on_the_features() -> None:
    sampler = _make("bocr")
    assert sampler.clusters(0) == [NAMES[0:3], NAMES[3:6], NAMES[6:9]]
    assert sampler.stage_sizes == [3, 9]


def test_flat_has_one_variable_per_parameter_from_the_start() -> None:
    assert _make("bocr-flat").stage_sizes == [9]


def test_random_clusters_ignore_the_features_and_follow_the_seed() -> None:
    groupings = [_make("bocr-random", seed=s).clusters(0) for s in range(4)]
    assert all(len(g) == 3 and sorted(sum(g, [])) == sorted(NAMES) for g in groupings)
    assert any(g != [NAMES[0:3], NAMES[3:6], NAMES[6:9]] for g in groupings)
    assert _make("bocr-random", seed=2).clusters(0) == groupings[2]
    assert _make("bocr-random").structure_pvalue is None  # not tested: no verdict to report


@pytest.mark.parametrize(("method", "observe"), [("bocr", False), ("bocr-actual", True)])
def test_what_the_gp_observes(method: str, observe: bool) -> None:
    _, settings = common.make_sampler(
        method, seed=0, search_space=SPACE, features=FEATURES, n_trials=60, distance="st"
    )
    assert settings.get("observe_actual", False) == observe
