"""Resuming a study on a real SQLite storage: another layout is refused, retries are exact."""

from __future__ import annotations

from pathlib import Path
import time
from typing import Any

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.storages import RDBStorage
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
import pytest

from optuna_bocr import BOCRSampler
from optuna_bocr import keys as _keys
from optuna_bocr.sampler._storage import PROPOSAL_ATTR

optuna.logging.set_verbosity(optuna.logging.WARNING)

NAMES = [f"p{i}" for i in range(6)]
SPACE = {n: FloatDistribution(0.1, 1.0) for n in NAMES}
VECTORS = np.array([[1.0, 10.0], [1.1, 11.0], [0.9, 9.0], [5.0, 1.0], [5.2, 1.1], [4.9, 0.9]])


def _sampler(**kw: Any) -> BOCRSampler:
    args: dict[str, Any] = dict(
        features=VECTORS, n_clusters=2, rollback_at=None, n_startup_trials=3, seed=0
    )
    args.update(kw)
    return BOCRSampler(SPACE, **args)


def _objective(trial: optuna.Trial) -> float:
    x = np.array([trial.suggest_float(n, 0.1, 1.0) for n in NAMES])
    return -float(np.sum((x - 0.5) ** 2))


def _load(url: str, sampler: BOCRSampler) -> optuna.Study:
    return optuna.load_study(study_name="s", storage=url, sampler=sampler)


@pytest.mark.parametrize(
    ("other", "what"),
    [
        (dict(n_clusters=3), "stages of [2] clusters"),
        (dict(n_clusters=2, rollback_at=(10,)), "stages of [2] clusters"),
        (dict(features=VECTORS[[0, 3, 1, 4, 2, 5]]), "other clusters"),
    ],
)
def test_resuming_with_another_layout_is_refused(
    tmp_path: Path, other: dict[str, Any], what: str
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    study = optuna.create_study(storage=url, study_name="s", direction="maximize")
    study.sampler = _sampler()
    study.optimize(_objective, n_trials=4)

    sampler = _sampler(**other)
    resumed = _load(url, sampler)
    with pytest.raises(ValueError, match="searched by a BOCRSampler with") as info:
        sampler.check_study(resumed)
    message = str(info.value)
    assert "\n" not in message and what in message and "start a new study" in message
    assert len(resumed.trials) == 4  # The check wrote nothing.
    # Proposing under the other layout is refused too, without a traceback from the numerics.
    with pytest.raises(ValueError, match="searched by a BOCRSampler with"):
        resumed.optimize(_objective, n_trials=1)
    assert [t.state for t in resumed.trials[4:]] == [TrialState.FAIL]
    assert resumed.trials[4].params == {}


def test_resuming_with_the_same_layout_continues(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    study = optuna.create_study(storage=url, study_name="s", direction="maximize")
    study.sampler = _sampler()
    study.optimize(_objective, n_trials=3)
    sampler = _sampler()
    resumed = _load(url, sampler)
    sampler.check_study(resumed)
    resumed.optimize(_objective, n_trials=2)
    assert [t.state for t in resumed.trials] == [TrialState.COMPLETE] * 5
    # An empty study, or one without BOCR trials, passes.
    _sampler(n_clusters=3).check_study(optuna.create_study(storage=url, study_name="empty"))


def test_a_retried_trial_gets_the_failed_trials_whole_proposal(tmp_path: Path) -> None:
    storage = RDBStorage(
        f"sqlite:///{tmp_path / 'db.sqlite3'}",
        heartbeat_interval=1,
        grace_period=1,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
    )
    study = optuna.create_study(
        storage=storage, study_name="s", direction="maximize", sampler=_sampler()
    )
    study.optimize(_objective, n_trials=4)
    # A worker proposes trial 4, suggests half of the parameters and dies (no more
    # heartbeats): the next worker's optimize fails it as stale and runs its retry.
    dead = study.ask()
    for name in NAMES[:3]:
        dead.suggest_float(name, 0.1, 1.0)
    storage.record_heartbeat(dead._trial_id)
    time.sleep(2.5)
    study.optimize(_objective, n_trials=1)
    trials = study.trials
    assert trials[4].state == TrialState.FAIL
    retry = trials[5]
    assert retry.state == TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == 4
    proposal = trials[4].system_attrs[PROPOSAL_ATTR]
    assert [retry.params[n] for n in NAMES] == proposal
    assert retry.system_attrs[PROPOSAL_ATTR] == proposal
    assert retry.user_attrs[_keys.STAGE_KEY] == trials[4].user_attrs[_keys.STAGE_KEY]


def test_a_stage_opened_meanwhile_by_an_earlier_trial_is_followed(tmp_path: Path) -> None:
    # Two workers: trial 7's worker read the study while trial 5 was still running; then
    # trial 5 finished, and trial 6's worker, reading after that, opened stage 1 (five
    # trials without a new best). Trial 7 must not propose in the stage trial 6 closed.
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    sampler = _sampler(rollback_at=(50,), patience=5)
    study = optuna.create_study(storage=url, study_name="s", direction="maximize")
    for value in (1.0, 0.0, 0.0, 0.0, 0.0):
        study.add_trial(
            optuna.trial.create_trial(
                params=dict.fromkeys(NAMES, 0.5), distributions=SPACE, value=value
            )
        )
    storage, study_id = study._storage, study._study_id
    ids = [storage.create_new_trial(study_id) for _ in range(3)]  # trials 5, 6, 7
    stale = study.get_trials()
    for name in NAMES:
        storage.set_trial_param(ids[0], name, 0.3, SPACE[name])
    storage.set_trial_state_values(ids[0], TrialState.COMPLETE, [0.0])
    trial6, trial7 = (storage.get_trial(i) for i in ids[1:])

    opened = sampler._propose(study, trial6, study.get_trials())
    assert opened.stage == 1
    late = sampler._propose(study, trial7, stale)
    assert late.stage == 1
    assert not np.allclose(late.params, opened.params)
