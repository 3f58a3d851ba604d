"""BOCRSampler(evaluation_key=...): no trial spends its evaluation on a known one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
import pytest

from optuna_bocr import BOCRSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

NAMES = [f"p{i}" for i in range(6)]
SPACE = {n: FloatDistribution(0.0, 1.0) for n in NAMES}
VECTORS = np.array([[1.0, 10], [1.1, 11], [0.9, 9], [5.0, 1], [5.2, 1.1], [4.9, 0.9]])
TARGET = np.array([0.3, 0.35, 0.4, 0.8, 0.85, 0.9])
LEVELS = 4
N_TRIALS = 32
"""Each parameter is evaluated at one of 5 levels, as a layer keeps a whole number of
channels: points a fraction of a level apart are one evaluation."""


def grid_key(params: Mapping[str, float]) -> tuple[int, ...]:
    return tuple(int(np.floor(params[n] * LEVELS + 0.5)) for n in NAMES)


def objective(trial: optuna.Trial) -> float:
    x = np.array([trial.suggest_float(n, 0.0, 1.0) for n in NAMES])
    level = np.floor(x * LEVELS + 0.5) / LEVELS
    return -float(np.sum((level - TARGET) ** 2))


def _keys(study: optuna.Study) -> list[tuple[int, ...]]:
    return [grid_key(t.params) for t in study.trials]


def _run(tmp_path: Path, name: str, *, n_jobs: int = 1, **kwargs: object) -> optuna.Study:
    sampler = BOCRSampler(
        SPACE,
        features=VECTORS,
        n_clusters=2,
        rollback_at=(10,),
        n_startup_trials=5,
        seed=0,
        **kwargs,  # type: ignore[arg-type]
    )
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        study_name=name,
        direction="maximize",
        sampler=sampler,
    )
    study.optimize(objective, n_trials=N_TRIALS, n_jobs=n_jobs)
    return study


def test_no_trial_repeats_an_evaluation_that_the_plain_sampler_repeats(tmp_path: Path) -> None:
    plain = _keys(_run(tmp_path, "plain"))
    keyed_study = _run(tmp_path, "keyed", evaluation_key=grid_key)
    keyed = _keys(keyed_study)
    # The trust region shrinks below a level: without the key, trials repeat evaluations.
    assert len(plain) - len(set(plain)) >= 5
    assert len(keyed) == len(set(keyed)) == N_TRIALS
    assert keyed_study.best_value >= -0.07  # it still finds the good region


def test_workers_sharing_a_study_do_not_repeat_evaluations(tmp_path: Path) -> None:
    keys = _keys(_run(tmp_path, "workers", n_jobs=2, evaluation_key=grid_key))
    assert len(keys) == len(set(keys)) == N_TRIALS


def test_bad_keys_are_refused_with_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="evaluation_key must be None or a callable"):
        BOCRSampler(SPACE, features=VECTORS, evaluation_key=3)  # type: ignore[arg-type]

    def unhashable(params: Mapping[str, float]) -> list[float]:
        return list(params.values())

    sampler = BOCRSampler(
        SPACE, features=VECTORS, n_startup_trials=1, evaluation_key=unhashable, seed=0
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    with pytest.raises(RuntimeError, match="evaluation_key failed on .*hashable key"):
        study.optimize(objective, n_trials=1)
