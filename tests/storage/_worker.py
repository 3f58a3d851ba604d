"""A worker process of the storage tests: BOCR on a cheap 6-parameter objective.

Run as ``python -m tests.storage._worker URL STUDY N_TRIALS [options]`` from the repository
root. It opens the storage and runs trials exactly as ``optuna-bocr prune`` does
(``open_storage``, ``StorageLock``, ``TrialRunner``), with a synthetic objective.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import time

import numpy as np
import optuna
from optuna.distributions import FloatDistribution

from optuna_bocr import BOCRSampler
from optuna_bocr.cli import open_storage
from optuna_bocr.cli import StorageLock
from optuna_bocr.cli import TrialRunner

NAMES = [f"p{i}" for i in range(6)]
SPACE = {n: FloatDistribution(0.1, 1.0) for n in NAMES}
VECTORS = np.array([[1.0, 10.0], [1.1, 11.0], [0.9, 9.0], [5.0, 1.0], [5.2, 1.1], [4.9, 0.9]])
TARGET = np.array([0.3, 0.35, 0.4, 0.8, 0.85, 0.9])
SAMPLER_KWARGS = dict(n_clusters=2, rollback_at=(5,), patience=None, n_startup_trials=3, seed=3)


def make_sampler() -> BOCRSampler:
    """The sampler every worker uses (same settings and seed)."""
    return BOCRSampler(SPACE, features=VECTORS, **SAMPLER_KWARGS)  # type: ignore[arg-type]


def _barrier(folder: Path, n: int) -> None:
    """Wait until ``n`` workers reached this point, then go at once."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{time.time_ns()}-{id(folder)}").touch()
    while len(list(folder.iterdir())) < n:
        time.sleep(0.01)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("study")
    p.add_argument("n_trials", type=int)
    p.add_argument("--heartbeat", type=int, default=0)
    p.add_argument("--sleep", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--barrier", default=None, help="folder; wait for --n-workers workers")
    p.add_argument("--n-workers", type=int, default=1)
    p.add_argument("--hang-marker", default=None, help="hang mid-trial once, touching this")
    p.add_argument("--hang-at", type=int, default=4, help="trial number that hangs")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = make_sampler()
    if args.barrier:
        _barrier(Path(args.barrier), args.n_workers)
    storage = open_storage(args.url, heartbeat=args.heartbeat or None)
    assert storage is not None
    lock = StorageLock(args.url, f"study:{args.study}")
    with lock:
        study = optuna.create_study(
            storage=storage, study_name=args.study, direction="maximize", sampler=sampler,
            load_if_exists=True,
        )  # fmt: skip

    def objective(trial: optuna.Trial) -> float:
        x = []
        for i, name in enumerate(NAMES):
            x.append(trial.suggest_float(name, 0.1, 1.0))
            marker = Path(args.hang_marker) if args.hang_marker else None
            if i == 2 and marker and trial.number == args.hang_at and not marker.exists():
                marker.write_text(str(trial.number))  # Half of the params are set: die here.
                time.sleep(600)
        time.sleep(args.sleep)
        return -float(np.sum((np.array(x) - TARGET) ** 2))

    TrialRunner(study, objective, n_trials=args.n_trials, lock=lock, storage=storage).run_threads(
        args.threads
    )


if __name__ == "__main__":
    main()
