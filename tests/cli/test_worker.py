"""TrialRunner (the trial loop of ``optuna-bocr prune``): pruned trials, and Ctrl-C."""

from __future__ import annotations

from pathlib import Path
import sqlite3
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from optuna.trial import TrialState
import pytest

from optuna_bocr.cli import open_storage
from optuna_bocr.cli import StorageLock
from optuna_bocr.cli import TrialRunner


class _InterruptedSampler(optuna.samplers.RandomSampler):
    """Raises KeyboardInterrupt in ``before_trial`` of trial ``at``.

    That is inside ``study.ask()``, after the storage has created the RUNNING trial: where a
    Ctrl-C lands when the storage is slow to read the new trial back.
    """

    def __init__(self, at: int) -> None:
        super().__init__(seed=0)
        self._at = at

    def before_trial(self, study: Any, trial: FrozenTrial) -> None:
        if trial.number == self._at:
            raise KeyboardInterrupt


def _runner(tmp_path: Path, sampler: optuna.samplers.BaseSampler, objective: Any) -> Any:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = open_storage(url, heartbeat=None)
    assert storage is not None
    study = optuna.create_study(storage=storage, study_name="s", sampler=sampler)
    runner = TrialRunner(
        study, objective, n_trials=10, lock=StorageLock(url, "study:s"), storage=storage
    )
    return study, runner


def test_pruned_trials_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.report(x, step=0)
        if trial.number % 3 == 1:
            raise optuna.TrialPruned
        return x

    study, runner = _runner(tmp_path, optuna.samplers.RandomSampler(seed=0), objective)
    runner.run_threads(1)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.PRUNED) == 3 and states.count(TrialState.COMPLETE) == 7
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert all(t.value is not None for t in pruned)  # at its last reported value


@pytest.mark.parametrize("n_threads", [1, 2])
def test_ctrl_c_in_the_sampler_fails_the_new_trial(tmp_path: Path, n_threads: int) -> None:
    study, runner = _runner(
        tmp_path, _InterruptedSampler(3), lambda t: t.suggest_float("x", 0.0, 1.0)
    )
    with pytest.raises(KeyboardInterrupt):
        runner.run_threads(n_threads)
    trials = study.get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    assert trials[3].state == TrialState.FAIL
    assert all(t.state == TrialState.COMPLETE for t in trials[:3])


@pytest.mark.parametrize("n_threads", [1, 2])
def test_ctrl_c_while_the_objective_holds_a_write_lock_still_fails_the_trial(
    tmp_path: Path, n_threads: int
) -> None:
    """A Ctrl-C that lands inside a storage write can leave that write's SQLite lock held by
    an object of the interrupted frames; the trial is failed once those frames are gone."""

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number == 2:
            held = sqlite3.connect(tmp_path / "study.db", timeout=0.1)
            held.execute("BEGIN IMMEDIATE")  # the database's write lock, until `held` is freed
            held.execute("UPDATE trials SET state = state WHERE trial_id = -1")
            raise KeyboardInterrupt
        return x

    study, runner = _runner(tmp_path, optuna.samplers.RandomSampler(seed=0), objective)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.run_threads(n_threads)
    assert time.monotonic() - start < 4.0  # not one SQLite busy timeout (5 s) spent waiting
    trials = study.get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    assert trials[2].state == TrialState.FAIL
