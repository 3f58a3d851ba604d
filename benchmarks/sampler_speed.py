"""Sampler speed: BOCR against Optuna's GPSampler, time per trial split by where it goes.

A cheap synthetic task (``d`` layers' preserve ratios in ``[0.1, 1]`` in three groups of
different sensitivity, a FLOPs budget enforced by :func:`benchmarks._synthetic_tasks.clip_ratios`
with the actual ratios recorded as :data:`~optuna_bocr.keys.ACTUAL_PARAMS_KEY`, as the
pruning objective does) is run with ``study.ask()`` / ``study.tell()``; the objective is
outside the timed part. The time of each trial's ``ask()`` plus suggestions is split into:

``fit``
    the GP hyperparameter fit (BOCR: ``fit_gp``; GPSampler: ``optuna._gp.gp.fit_kernel_params``),
``acq``
    the acquisition optimisation (BOCR: ``optimize_log_ei``; GPSampler:
    ``optuna._gp.optim_mixed.optimize_acqf_mixed``),
``reads``
    reading the trial history (``Study._get_trials``, which both samplers use),
``rest``
    everything else (history conversion, storage writes, Optuna's own bookkeeping).

Each part is measured in wall-clock and in process CPU time (the machine may be shared,
then wall time is noisy and CPU time is the fairer measure). One study is run per setting,
to the largest ``n``; for each ``n`` the table gives medians over trials ``3n/4 .. n-1``
(150-199 for 200 trials) of that study.

BOCR runs in three settings: ``clustered`` (its first stage, 3 clusters, never rolled back:
a 3-dimensional GP whatever ``d``), ``per-parameter`` (one variable per parameter from
the first trial: a ``d``-dimensional GP, GPSampler's case) and ``rolled-back`` (3 clusters,
then one variable per parameter from trial 30 on, in the sampler's trust region: the
default schedule's later trials).

Examples::

    OMP_NUM_THREADS=1 python -m benchmarks.sampler_speed --n-trials 200 --dims 27 \\
        --stages per-parameter --storages memory
    OMP_NUM_THREADS=1 python -m benchmarks.sampler_speed            # the full grid (hours)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from collections.abc import Iterator
import contextlib
from dataclasses import dataclass
from dataclasses import field
import importlib
import json
import os
from pathlib import Path
import platform
import tempfile
import time
from typing import Any

import numpy as np
import optuna
from optuna.distributions import FloatDistribution

from benchmarks import _common as common
from benchmarks import _jobs
from benchmarks._synthetic_tasks import clip_ratios
from optuna_bocr import BOCRSampler
from optuna_bocr import ParameterFeatures
from optuna_bocr.keys import ACTUAL_PARAMS_KEY

PARTS = ("fit", "acq", "reads")
LBOUND = 0.1

# Where each part lives: (module, attribute) pairs, patched where they exist.
_HOOKS: dict[str, dict[str, list[tuple[str, str]]]] = {
    "bocr": {
        "fit": [
            ("optuna_bocr.sampler._sampler", "fit_gp"),
            ("optuna_bocr.sampler._proposal", "fit_gp"),
        ],
        "acq": [
            ("optuna_bocr.sampler._sampler", "optimize_log_ei"),
            ("optuna_bocr.sampler._proposal", "optimize_log_ei"),
        ],
    },
    # GPSampler reaches these modules through lazy proxies that copy the module's names
    # when first used: patch the proxies too.
    "gp": {
        "fit": [
            ("optuna._gp.gp", "fit_kernel_params"),
            ("optuna.samplers._gp.sampler", "gp.fit_kernel_params"),
        ],
        "acq": [
            ("optuna._gp.optim_mixed", "optimize_acqf_mixed"),
            ("optuna.samplers._gp.sampler", "optim_mixed.optimize_acqf_mixed"),
        ],
    },
}


@dataclass
class _Clock:
    """Wall and CPU seconds per part, for the trial being timed."""

    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    depth: int = 0

    def reset(self) -> None:
        self.wall = dict.fromkeys(PARTS, 0.0)
        self.cpu = dict.fromkeys(PARTS, 0.0)

    def wrap(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            if clock.depth > 0:  # Nested in another timed part: counted there.
                return fn(*args, **kwargs)
            clock.depth += 1
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                clock.wall[part] += time.perf_counter() - w0
                clock.cpu[part] += time.process_time() - c0
                clock.depth -= 1

        return timed


@contextlib.contextmanager
def _instrumented(sampler_kind: str, clock: _Clock) -> Iterator[None]:
    patched: list[tuple[Any, str, Any]] = []
    for part, targets in _HOOKS[sampler_kind].items():
        for module_name, path in targets:
            try:
                owner: Any = importlib.import_module(module_name)
            except ImportError:
                continue
            *parents, attr = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            if hasattr(owner, attr):
                original = getattr(owner, attr)
                patched.append((owner, attr, original))
                setattr(owner, attr, clock.wrap(part, original))
    study_cls = optuna.study.Study
    original_reads = study_cls._get_trials
    patched.append((study_cls, "_get_trials", original_reads))
    study_cls._get_trials = clock.wrap("reads", original_reads)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for owner, attr, original in reversed(patched):
            setattr(owner, attr, original)


@dataclass(frozen=True)
class Task:
    """``d`` layers in three sensitivity groups under a FLOPs budget of half the network."""

    dims: int

    @property
    def names(self) -> list[str]:
        return [f"layer{i:03d}" for i in range(self.dims)]

    @property
    def groups(self) -> np.ndarray:
        return np.arange(self.dims) * 3 // self.dims

    @property
    def search_space(self) -> dict[str, FloatDistribution]:
        return {n: FloatDistribution(LBOUND, 1.0) for n in self.names}

    @property
    def features(self) -> ParameterFeatures:
        rng = np.random.default_rng(self.dims)
        loc = (0.0, 0.7, 1.4)
        return ParameterFeatures(
            samples={
                n: rng.lognormal(loc[g], 0.3, size=32)
                for n, g in zip(self.names, self.groups, strict=True)
            }
        )

    def evaluate(self, proposed: np.ndarray) -> tuple[float, np.ndarray]:
        weights = np.ones(self.dims)
        fixed = 0.05 * self.dims
        actual = clip_ratios(proposed, weights, fixed, 0.5 * (fixed + self.dims), LBOUND)
        a = np.array([6.0, 2.5, 1.0])[self.groups]
        q = np.array([2.0, 2.5, 3.0])[self.groups]
        loss = np.sum(a * ((1.0 - actual) / (1.0 - LBOUND)) ** q) * 27.0 / self.dims
        return 100.0 - float(loss), actual


def make_sampler(kind: str, stage: str, task: Task, seed: int) -> optuna.samplers.BaseSampler:
    """BOCR in the given stage setting, or GPSampler (``stage`` does not apply)."""
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    n_clusters = task.dims if stage == "per-parameter" else 3
    return BOCRSampler(
        task.search_space,
        features=task.features,
        n_clusters=n_clusters,
        rollback_at=(30,) if stage == "rolled-back" else None,
        patience=None,
        seed=seed,
        check_structure=False,
    )


def run(
    kind: str, stage: str, dims: int, n_trials: int, storage: str, seed: int = 0
) -> dict[str, Any]:
    """One study; returns per-trial wall and CPU seconds of the sampler, split by part."""
    task = Task(dims)
    clock = _Clock()
    with contextlib.ExitStack() as stack:
        url: str | None = None
        if storage == "sqlite":
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            url = f"sqlite:///{Path(folder) / 'speed.db'}"
        study = optuna.create_study(
            direction="maximize", sampler=make_sampler(kind, stage, task, seed), storage=url
        )
        stack.enter_context(_instrumented(kind, clock))
        rows: list[dict[str, float]] = []
        best_at: list[float] = []
        for _ in range(n_trials):
            clock.reset()
            w0, c0 = time.perf_counter(), time.process_time()
            trial = study.ask()
            x = np.array([trial.suggest_float(n, LBOUND, 1.0) for n in task.names])
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            value, actual = task.evaluate(x)
            trial.set_user_attr(
                ACTUAL_PARAMS_KEY, {n: float(v) for n, v in zip(task.names, actual, strict=True)}
            )
            study.tell(trial, value)
            rows.append({"wall": wall, "cpu": cpu, **clock_row(clock)})
            best_at.append(max(value, best_at[-1]) if best_at else value)
    return {
        "sampler": kind,
        "stage": stage if kind == "bocr" else "-",
        "dims": dims,
        "n_trials": n_trials,
        "storage": storage,
        "best_at": best_at,
        "trials": rows,
    }


def clock_row(clock: _Clock) -> dict[str, float]:
    return {
        **{f"{p}_wall": clock.wall[p] for p in PARTS},
        **{f"{p}_cpu": clock.cpu[p] for p in PARTS},
    }


def summary(record: dict[str, Any], n: int | None = None) -> dict[str, float]:
    """Medians over trials ``3n/4 .. n-1`` (ms; default: the whole run's ``n``)."""
    n = record["n_trials"] if n is None else n
    rows = record["trials"][(3 * n) // 4 : n]
    out: dict[str, float] = {}
    for kind in ("wall", "cpu"):
        total = np.array([r[kind] for r in rows])
        parts = {p: np.array([r[f"{p}_{kind}"] for r in rows]) for p in PARTS}
        out[f"total_{kind}"] = 1e3 * float(np.median(total))
        for p in PARTS:
            out[f"{p}_{kind}"] = 1e3 * float(np.median(parts[p]))
        out[f"rest_{kind}"] = 1e3 * float(np.median(total - sum(parts.values())))
    return out


def table(records: list[dict[str, Any]], sizes: list[int]) -> str:
    """Markdown table: one row per record and study size ``n`` it reached."""
    header = [
        "sampler",
        "stage",
        "d",
        "n",
        "storage",
        "total wall",
        "total CPU",
        "fit",
        "acq",
        "reads",
        "rest",
        "best so far",
    ]
    rows = []
    for rec, n in [(r, n) for r in records for n in sizes if n <= r["n_trials"]]:
        s = summary(rec, n)
        rows.append(
            [
                "BOCR" if rec["sampler"] == "bocr" else "GPSampler",
                rec["stage"],
                str(rec["dims"]),
                str(n),
                rec["storage"],
                f"{s['total_wall']:.0f}",
                f"{s['total_cpu']:.0f}",
                f"{s['fit_cpu']:.0f}",
                f"{s['acq_cpu']:.0f}",
                f"{s['reads_cpu']:.0f}",
                f"{s['rest_cpu']:.0f}",
                f"{rec['best_at'][n - 1]:.2f}",
            ]
        )
    return common.markdown_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    """Run the grid (or the part given by the flags) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-trials", default="50,100,200,500,1000", help="comma-separated")
    parser.add_argument("--dims", default="9,27,54,200", help="comma-separated")
    parser.add_argument(
        "--stages",
        default="clustered,per-parameter",
        help="BOCR settings: clustered, per-parameter and/or rolled-back",
    )
    parser.add_argument("--storages", default="memory,sqlite", help="memory and/or sqlite")
    parser.add_argument("--samplers", default="bocr,gp", help="bocr and/or gp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the raw records (JSON) here")
    args = parser.parse_args(argv)
    _jobs.limit_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sizes = sorted(int(v) for v in args.n_trials.split(","))
    unknown = set(args.stages.split(",")) - {"clustered", "per-parameter", "rolled-back"}
    if unknown:
        parser.error(
            f"--stages: unknown {sorted(unknown)}; use clustered, per-parameter, rolled-back"
        )
    records = []
    for storage in args.storages.split(","):
        for dims in [int(v) for v in args.dims.split(",")]:
            for kind in args.samplers.split(","):
                stages = args.stages.split(",") if kind == "bocr" else ["-"]
                for stage in stages:
                    rec = run(kind, stage, dims, sizes[-1], storage, seed=args.seed)
                    records.append(rec)
                    for n in sizes:
                        s = summary(rec, n)
                        print(
                            f"[done] {kind:4s} {stage:13s} d={dims:3d} n={n:4d} {storage:6s}: "
                            f"{s['total_wall']:.0f} ms wall, {s['total_cpu']:.0f} ms CPU "
                            f"(fit {s['fit_cpu']:.0f}, acq {s['acq_cpu']:.0f}, "
                            f"reads {s['reads_cpu']:.0f}, rest {s['rest_cpu']:.0f})",
                            flush=True,
                        )
                    if args.out:
                        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                        Path(args.out).write_text(json.dumps(records))
    print()
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print("Median ms per trial over trials 3n/4 .. n-1 (wall and CPU; the parts in CPU time)")
    print(table(records, sizes))


if __name__ == "__main__":
    main()
