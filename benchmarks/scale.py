"""Scale benchmark: 1, 2, 4, 8 worker processes on one PostgreSQL study.

Each worker is a separate process that runs trials as ``optuna-bocr prune`` does
(:func:`optuna_bocr.cli.open_storage`, :class:`~optuna_bocr.cli.StorageLock`,
:class:`~optuna_bocr.cli.TrialRunner`, heartbeat on) with ``BOCRSampler`` (gradual
rollback, the schedule of ``benchmarks/_common.py`` scaled to the budget) on the synthetic
task ``grouped27`` of ``synthetic.py``; every trial also sleeps ``--sleep`` seconds, standing
in for the evaluation of a pruned network on a GPU. Every worker count gets the same budget
and seed, on its own study.

Reported per worker count, from the storage: wall time (first trial start to last trial
end, so process start-up is not counted), trials per minute, sampler time per trial (the
time spent in the sampler, ``_common.TimedSampler``: the GP fit and acquisition, which run
in each worker while the other workers' trials run), and the final normalised regret
(``synthetic.py``: 0 = optimal, 1 = a typical random strategy) against one worker.

Usage::

    python -m benchmarks.scale --storage postgresql://user@host/db \\
        --workers 1,2,4,8 --n-trials 40 --sleep 2 --out benchmarks/runs/scale
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import time
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from benchmarks import _common as common
from benchmarks import _methods
from benchmarks import _synthetic_tasks
from benchmarks import synthetic

METHOD = "bocr-gradual"
ENV_URL = "OPTUNA_BOCR_TEST_POSTGRES_URL"


def _study_name(task: str, workers: int, n_trials: int, seed: int, tag: str) -> str:
    return f"scale{tag}-{task}-n{n_trials}-s{seed}-w{workers}"


def worker(
    url: str, study_name: str, task_name: str, n_trials: int, seed: int, sleep: float
) -> None:
    """One worker process: claim and run trials until the study has ``n_trials``."""
    from optuna_bocr.cli import open_storage
    from optuna_bocr.cli import StorageLock
    from optuna_bocr.cli import TrialRunner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = _synthetic_tasks.make_task(task_name)
    inner, _ = _methods.make_sampler(
        METHOD,
        seed=seed,
        search_space=task.search_space,
        features=task.features,
        n_trials=n_trials,
        n_clusters=task.n_clusters,
        bridge_clusters=task.bridge_clusters,
        unstructured_fallback=True,
    )
    storage = open_storage(url, heartbeat=10)
    assert storage is not None
    lock = StorageLock(url, f"optuna-bocr-study:{study_name}")
    with lock:
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            sampler=common.TimedSampler(inner),
            direction="maximize",
            load_if_exists=True,
        )
    score = synthetic.make_objective(task)

    def objective(trial: optuna.Trial) -> float:
        value = score(trial)
        time.sleep(sleep)
        return value

    TrialRunner(study, objective, n_trials=n_trials, lock=lock, storage=storage).run()


def run_config(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    """Run (or resume) the study of one worker count; return its measurements."""
    name = _study_name(args.task, workers, args.n_trials, args.seed, args.tag)
    cmd = [sys.executable, "-m", "benchmarks.scale", "--worker", name, "--storage", args.storage]
    cmd += ["--task", args.task, "--n-trials", str(args.n_trials), "--seed", str(args.seed)]
    cmd += ["--sleep", str(args.sleep)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    print(f"{name}: {workers} worker(s) ...", flush=True)
    procs = [subprocess.Popen(cmd, env=env) for _ in range(workers)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"{name}: a worker failed (exit statuses {codes})")
    trials = optuna.load_study(study_name=name, storage=args.storage).get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert done and all(t.datetime_start and t.datetime_complete for t in done)
    start = min(t.datetime_start for t in done if t.datetime_start)
    end = max(t.datetime_complete for t in done if t.datetime_complete)
    sampler = np.array([t.user_attrs.get(common.SAMPLER_SECONDS_ATTR, np.nan) for t in done])
    task = _synthetic_tasks.make_task(args.task)
    f_star, _ = _synthetic_tasks.optimum(task)
    f_ref = _synthetic_tasks.reference_score(task)
    best = max(float(t.value) for t in done if t.value is not None)
    points = {tuple(round(v, 9) for v in t.params.values()) for t in done}
    return {
        "study": name,
        "workers": workers,
        "n_finished": len(done),
        "n_trials_total": len(trials),
        "distinct_points": len(points),
        "wall_seconds": (end - start).total_seconds(),
        "sampler_seconds_mean": float(np.nanmean(sampler)),
        "sampler_seconds_median": float(np.nanmedian(sampler)),
        "sampler_seconds_max": float(np.nanmax(sampler)),
        "best": best,
        "regret": (f_star - best) / (f_star - f_ref),
        "stages": sorted({int(t.user_attrs.get("bocr:stage", -1)) for t in done}),
    }


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The Markdown table of the measurements."""
    one = next((r for r in rows if r["workers"] == 1), None)
    lines = [
        f"Task `{args.task}`, {METHOD}, {args.n_trials} trials, seed {args.seed}, "
        f"{args.sleep:g} s sleep per trial.",
        "",
        "| workers | finished | wall (s) | speed-up | trials/min | sampler s/trial "
        "(mean / median / max) | final regret | vs 1 worker |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        speedup = one["wall_seconds"] / r["wall_seconds"] if one else float("nan")
        versus = r["regret"] - one["regret"] if one else float("nan")
        lines.append(
            f"| {r['workers']} | {r['n_finished']} | {r['wall_seconds']:.1f} | "
            f"x{speedup:.2f} | {60 * r['n_finished'] / r['wall_seconds']:.1f} | "
            f"{r['sampler_seconds_mean']:.2f} / {r['sampler_seconds_median']:.2f} / "
            f"{r['sampler_seconds_max']:.2f} | {r['regret']:.4f} | {versus:+.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line of the scale benchmark."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--storage", default=os.environ.get(ENV_URL), help=f"RDB URL (default: ${ENV_URL})"
    )
    p.add_argument("--workers", default="1,2,4,8", help="worker counts (default: 1,2,4,8)")
    p.add_argument("--task", default="grouped27", choices=_synthetic_tasks.TASKS)
    p.add_argument("--n-trials", type=int, default=40)
    p.add_argument("--sleep", type=float, default=2.0, help="seconds per trial (default: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="", help="study-name suffix, to run again from scratch")
    p.add_argument("--out", type=Path, default=Path("benchmarks/runs/scale"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.storage:
        p.error(f"pass --storage postgresql://... (or set ${ENV_URL})")
    if args.worker:
        worker(args.storage, args.worker, args.task, args.n_trials, args.seed, args.sleep)
        return
    counts = [int(w) for w in args.workers.split(",")]
    from optuna_bocr.cli import open_storage

    open_storage(args.storage)  # Create the tables once, before the timed runs.
    rows = [run_config(args, w) for w in counts]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"scale{args.tag}.json").write_text(json.dumps(rows, indent=1))
    print(report(rows, args))


if __name__ == "__main__":
    main()
