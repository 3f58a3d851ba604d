"""Run a study's trials until it has exactly N finished ones, with any number of workers.

``study.optimize(n_trials=...)`` counts the trials of one call, and Optuna's
``MaxTrialsCallback`` looks only after a trial ends, so workers that start trials at the same
moment overshoot the target. Here every worker claims a trial under a lock shared by all
workers of the storage (:class:`~optuna_bocr.cli._storage.StorageLock`): it starts one only
while ``finished + running < N``, so the study ends with exactly ``N`` finished (COMPLETE or
PRUNED) trials, however many workers, threads or machines run it.

While the other workers' running trials would complete the study, a worker waits (when
the storage has a heartbeat): if one of them fails, or its worker dies and the heartbeat
lets the trial go stale, the waiting worker takes over. A stale trial is failed and re-queued
(WAITING) before each claim, and a claim takes a WAITING trial before making a new one.
A worker killed while it proposed (inside ``study.ask()``, before its trial's first
heartbeat) leaves a RUNNING trial without parameters that no heartbeat will ever mark
stale; such a trial is failed and re-queued the same way once it is
:data:`DEAD_PROPOSAL_SECONDS` old (a proposal takes well under a second to a few seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
import contextlib
import copy
import datetime
import gc
import math
import signal
import sys
import threading
import time
from typing import Any
import warnings

import optuna
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from optuna_bocr.cli._storage import heartbeat_of
from optuna_bocr.cli._storage import StorageLock

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_CLAIMED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
_STOP = object()
_WAIT = object()
DEAD_PROPOSAL_SECONDS = 30.0
"""A RUNNING trial of another worker with no parameter after this long is dead."""


def n_finished(study: optuna.study.Study) -> int:
    """Number of COMPLETE and PRUNED trials of ``study``."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


class _Heartbeat:
    """Records a running trial's heartbeat every ``interval`` seconds, in a thread."""

    def __init__(self, storage: Any, trial_id: int, interval: int | None) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if interval:
            self._thread = threading.Thread(
                target=self._beat, args=(storage, trial_id, interval), daemon=True
            )
            self._thread.start()

    def _beat(self, storage: Any, trial_id: int, interval: int) -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # noqa: BLE001 - a missed beat must not kill the trial
                pass
            if self._stop.wait(interval):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class TrialRunner:
    """Claims and runs trials of ``study`` until it has ``n_trials`` finished ones.

    Args:
        study: The study (its storage may be shared with other workers).
        objective: Called with each :class:`optuna.Trial`; returns the value, or raises
            :class:`optuna.TrialPruned`. Any other exception fails the trial and stops
            this worker (it is re-raised by :meth:`run`).
        n_trials: Finished trials the study should have.
        lock: The lock every worker of the study shares (see
            :class:`~optuna_bocr.cli._storage.StorageLock`).
        storage: The storage object, for its heartbeat (the one given to the study).
        timeout: Seconds after which no new trial is claimed.
        on_finish: Called after each trial this process ran (e.g. a progress bar).
    """

    def __init__(
        self,
        study: optuna.study.Study,
        objective: Callable[[optuna.Trial], float],
        *,
        n_trials: int,
        lock: StorageLock,
        storage: optuna.storages.BaseStorage,
        timeout: float | None = None,
        on_finish: Callable[[], None] | None = None,
    ) -> None:
        self._study = study
        self._objective = objective
        self._n_trials = n_trials
        self._lock = lock
        self._storage = storage
        self._interval = heartbeat_of(storage)
        self._deadline = math.inf if timeout is None else time.monotonic() + timeout
        self._on_finish = on_finish
        self._stopping = threading.Event()
        self.interrupted = threading.Event()
        """Set by :meth:`catch_ctrl_c`'s handler: stop as if interrupted at the next chance."""
        self._running: dict[int, optuna.Trial] = {}
        self._running_lock = threading.Lock()
        # Optuna warns when ask() is used with a heartbeat; this loop records the heartbeat.
        warnings.filterwarnings(
            "ignore", message="Heartbeat of storage is supposed to be used with Study.optimize"
        )

    def _claim(self) -> optuna.Trial | object:
        if self._stopping.is_set() or time.monotonic() > self._deadline:
            return _STOP
        with self._lock:
            if self._interval:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(self._study)
            claimed = self._study.get_trials(deepcopy=False, states=_CLAIMED)
            finished = sum(t.state in FINISHED for t in claimed)
            if finished >= self._n_trials:
                return _STOP
            if len(claimed) >= self._n_trials:
                # The running trials complete the study, unless one fails or goes stale.
                if not self._interval:
                    return _STOP
                self._fail_dead_proposals(claimed)
                return _WAIT
            running = {t._trial_id for t in claimed if t.state == TrialState.RUNNING}
            # ask() creates the RUNNING trial before the sampler proposes its point; a
            # Ctrl-C (or an error) in the sampler leaves that trial running. The lock keeps
            # other workers from creating trials meanwhile, so it is the new one.
            interrupted = False
            try:
                trial = self._study.ask()
            except KeyboardInterrupt:
                interrupted = True  # failed below, once the interrupted frames are freed
            except BaseException:
                self._fail_new_running(running)
                raise
            if interrupted:
                _free_interrupted_frames()
                self._fail_new_running(running)
                raise KeyboardInterrupt
        with self._running_lock:
            self._running[trial._trial_id] = trial
        return trial

    def _fail_new_running(self, running_before: set[int]) -> None:
        """Fail the RUNNING trials that are not in ``running_before`` (an interrupted ask)."""
        for t in self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t._trial_id in running_before:
                continue
            try:
                self._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass

    def _fail_dead_proposals(self, claimed: list[FrozenTrial]) -> None:
        """Fail (and re-queue, like a stale trial) trials whose worker died in ``ask()``."""
        with self._running_lock:
            mine = set(self._running)
        now = datetime.datetime.now()
        storage = self._study._storage
        for t in claimed:
            if (
                t.state != TrialState.RUNNING
                or t.params
                or t._trial_id in mine
                or t.datetime_start is None
                or (now - t.datetime_start).total_seconds() < DEAD_PROPOSAL_SECONDS
            ):
                continue
            try:
                if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # Another worker failed (or its owner finished) it first.
            callback = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
            if callback is not None:
                callback(self._study, copy.deepcopy(storage.get_trial(t._trial_id)))

    def _run_one(self, trial: optuna.Trial) -> None:
        beat = _Heartbeat(self._storage, trial._trial_id, self._interval)
        try:
            try:
                value: float | None = self._objective(trial)
                state = TrialState.COMPLETE
            except optuna.TrialPruned:
                value, state = None, TrialState.PRUNED
            except KeyboardInterrupt:
                # Not told here: the interrupted frames may hold a storage write's lock
                # (SQLite) until they are freed. The trial stays in the running set, and
                # stop() fails it after the exception has left the stack.
                raise
            except BaseException:
                self._tell(trial, state=TrialState.FAIL)
                raise
            if self.interrupted.is_set():  # Ctrl-C landed where it was swallowed.
                self._tell(trial, state=TrialState.FAIL)
                raise KeyboardInterrupt
            self._tell(trial, value, state=state)
        finally:
            beat.stop()
        # Only a trial told without interruption leaves the running set: one whose tell a
        # Ctrl-C cut short is still RUNNING in the storage, and stop() fails it.
        with self._running_lock:
            self._running.pop(trial._trial_id, None)
        if self._on_finish is not None:
            self._on_finish()

    def _tell(self, trial: optuna.Trial, value: float | None = None, **kw: Any) -> None:
        try:
            self._study.tell(trial, value, **kw)
        except optuna.exceptions.UpdateFinishedTrialError:
            if not self._stopping.is_set():  # failed by stop() after an interruption
                raise

    def run(self) -> None:
        """Claim and run trials in this thread until the study is done (or :meth:`stop`)."""
        while True:
            if self.interrupted.is_set():
                raise KeyboardInterrupt
            claim = self._claim()
            if claim is _STOP:
                return
            if claim is _WAIT:
                time.sleep(min(1.0, float(self._interval or 1)))
                continue
            assert isinstance(claim, optuna.Trial)
            self._run_one(claim)

    def run_threads(self, n_threads: int) -> None:
        """Run :meth:`run` in ``n_threads`` threads (this one included) until done.

        The first exception of any thread stops the others from claiming and is re-raised;
        on ``KeyboardInterrupt`` the trials still running are failed (see :meth:`stop`).
        """
        interrupted = False
        if n_threads <= 1:
            try:
                self.run()
            except KeyboardInterrupt:
                interrupted = True  # stopped below, once the exception has left the stack
            if interrupted:
                self.stop()
                raise KeyboardInterrupt
            return
        errors: list[BaseException] = []

        def body() -> None:
            interrupted = False
            try:
                self.run()
            except KeyboardInterrupt:
                interrupted = True  # kept without its traceback: see _run_one
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                if not self._stopping.is_set():
                    errors.append(e)
                self._stopping.set()
            if interrupted:
                self.interrupted.set()
                self._stopping.set()
                _free_interrupted_frames()

        threads = [threading.Thread(target=body, daemon=True) for _ in range(n_threads)]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(0.2)
        except KeyboardInterrupt:
            interrupted = True
        if interrupted or self.interrupted.is_set():
            self.stop()
            raise KeyboardInterrupt
        if errors:
            raise errors[0]

    def stop(self) -> None:
        """Claim no more trials and fail the ones this process is running (interrupted)."""
        self._stopping.set()
        with self._running_lock:
            running = list(self._running.values())
            self._running.clear()
        if running:
            _free_interrupted_frames()
        for trial in running:
            try:
                self._study.tell(trial, state=TrialState.FAIL)
            except Exception:  # noqa: BLE001 - already finished by its own thread
                pass


def _free_interrupted_frames() -> None:
    """Collect what an interrupted call left behind, before writing to the storage again.

    A Ctrl-C inside a storage write can leave an SQLite connection in the middle of its
    transaction, holding the database's write lock, referenced only from the interrupted
    frames (often in a reference cycle with the exception). Until it is freed, every other
    write waits for SQLite's busy timeout and fails with "database is locked".
    """
    gc.collect()


@contextlib.contextmanager
def catch_ctrl_c(runner: TrialRunner) -> Iterator[None]:
    """Make Ctrl-C stop ``runner`` cleanly, wherever it lands.

    ``KeyboardInterrupt`` raised inside code that ignores exceptions (some compiled
    extensions report it as "Exception ignored in ..." with a traceback, and go on) is not
    printed, and :attr:`TrialRunner.interrupted` makes the runner stop at the end of the
    trial. Only in the main thread; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous_handler = signal.getsignal(signal.SIGINT)
    previous_hook = sys.unraisablehook

    def handler(signum: int, frame: Any) -> None:
        runner.interrupted.set()
        raise KeyboardInterrupt

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous_hook(unraisable)

    signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = hook
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        sys.unraisablehook = previous_hook
