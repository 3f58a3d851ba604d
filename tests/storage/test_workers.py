"""Several worker processes on one study, on SQLite, a JournalStorage file and PostgreSQL.

Each worker runs trials as ``optuna-bocr prune`` does (tests/storage/_worker.py). They start
at the same moment on a new storage (no tables, no study yet), with a rollback inside the
budget, and must end with exactly the requested number of finished trials, no exception in
any worker, no two trials at one point and one stage sequence.
"""

from __future__ import annotations

from collections.abc import Callable
import itertools
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
from optuna.trial import FrozenTrial
from optuna.trial import TrialState
import pytest

from optuna_bocr import keys
from optuna_bocr.cli import open_storage
from optuna_bocr.sampler._storage import PROPOSAL_ATTR
from tests.storage._worker import NAMES
from tests.storage._worker import SAMPLER_KWARGS

ROOT = Path(__file__).resolve().parents[2]

ROLLBACK_AT = SAMPLER_KWARGS["rollback_at"][0]  # type: ignore[index]


def spawn(url: str, study: str, n_trials: int, *options: str) -> subprocess.Popen[str]:
    """Start a worker process (python -m tests.storage._worker)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.storage._worker", url, study, str(n_trials), *options],
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ok(procs: list[subprocess.Popen[str]], timeout: float = 300) -> None:
    """Every worker exits with status 0 and writes nothing to stderr (no exception)."""
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]
        assert err.strip() == "", err[-3000:]


def load_trials(url: str, study: str) -> list[FrozenTrial]:
    storage = open_storage(url, create=False)
    assert storage is not None, f"{url} was not created"
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def vector(t: FrozenTrial) -> np.ndarray:
    return np.array([t.params[n] for n in NAMES])


def position(t: FrozenTrial) -> int:
    """Where a trial stands in the search: a retry stands in for the trial it repeats."""
    return int(t.system_attrs.get("failed_trial", t.number))


def check_one_search(trials: list[FrozenTrial], n_trials: int) -> None:
    """Exactly ``n_trials`` finished, distinct points, one stage sequence.

    A retry evaluates the failed trial's proposal, made in that trial's stage, whenever
    the stale trial is noticed (possibly after a later trial opened the next stage), so it
    is placed at the failed trial's number.
    """
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n_trials, [t.state.name for t in trials]
    for a, b in itertools.combinations(finished, 2):
        assert np.max(np.abs(vector(a) - vector(b))) > 1e-6, (a.number, b.number)
    stages = [t.user_attrs[keys.STAGE_KEY] for t in sorted(finished, key=position)]
    assert stages == sorted(stages), stages  # Never back to an earlier stage.
    assert stages[-1] == 1, stages  # The rollback happened inside the budget.
    for stage in set(stages):
        sizes = {
            t.user_attrs[keys.N_CLUSTERS_KEY]
            for t in finished
            if t.user_attrs[keys.STAGE_KEY] == stage
        }
        assert len(sizes) == 1, (stage, sizes)
    assert all(
        t.user_attrs[keys.STAGE_KEY] == 1 for t in finished if position(t) >= ROLLBACK_AT
    ), stages


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_workers_started_at_once_on_a_new_storage(
    kind: str, new_storage_url: Callable[[str], str], tmp_path: Path
) -> None:
    url, n_workers, n_trials = new_storage_url(kind), 3, 8
    barrier = tmp_path / "barrier"
    options = ["--barrier", str(barrier), "--n-workers", str(n_workers), "--sleep", "0.1"]
    if kind != "journal":
        options += ["--heartbeat", "5"]
    procs = [spawn(url, "s", n_trials, *options) for _ in range(n_workers)]
    wait_ok(procs)
    trials = load_trials(url, "s")
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state.name for t in trials]
    check_one_search(trials, n_trials)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_threads_and_processes_stop_at_exactly_n(
    kind: str, new_storage_url: Callable[[str], str]
) -> None:
    # Two processes of two threads each: four trials at once, 7 wanted.
    url, n_trials = new_storage_url(kind), 7
    open_storage(url)  # The tables exist; the study does not.
    options = ["--threads", "2", "--sleep", "0.2", "--heartbeat", "5"]
    wait_ok([spawn(url, "t", n_trials, *options) for _ in range(2)])
    trials = load_trials(url, "t")
    assert len(trials) == n_trials
    check_one_search(trials, n_trials)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_killed_worker_is_detected_retried_and_continued(
    kind: str, new_storage_url: Callable[[str], str], tmp_path: Path
) -> None:
    url, n_trials, hang_at = new_storage_url(kind), 7, 3
    marker = tmp_path / "hanging"
    options = ["--heartbeat", "1", "--hang-marker", str(marker), "--hang-at", str(hang_at)]
    worker = spawn(url, "k", n_trials, *options)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert worker.poll() is None, worker.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the worker never reached the hanging trial"
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)  # Mid-trial: 3 of its 6 parameters are set.
    worker.communicate(timeout=60)
    dead = next(t for t in load_trials(url, "k") if t.number == hang_at)
    assert dead.state == TrialState.RUNNING and len(dead.params) == 3

    wait_ok([spawn(url, "k", n_trials, *options)])  # A restarted worker.
    trials = load_trials(url, "k")
    dead = next(t for t in trials if t.number == hang_at)
    assert dead.state == TrialState.FAIL  # Detected by its stale heartbeat.
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == hang_at]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    retry = retries[0]
    # The retry evaluates one BOCR proposal as a whole: the dead trial's, never a mix of its
    # first three parameters and a fresh proposal for the others.
    assert vector(retry).tolist() == pytest.approx(retry.system_attrs[PROPOSAL_ATTR], abs=1e-12)
    assert {n: retry.params[n] for n in dead.params} == dead.params
    assert vector(retry).tolist() == pytest.approx(dead.system_attrs[PROPOSAL_ATTR], abs=1e-12)
    assert retry.user_attrs[keys.STAGE_KEY] == dead.user_attrs[keys.STAGE_KEY]
    check_one_search([t for t in trials if t.number != hang_at], n_trials)
