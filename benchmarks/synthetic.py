"""Synthetic benchmark: cheap NumPy stand-ins for CNN channel pruning.

The tasks, their budget rule and their optimum are in :mod:`benchmarks._synthetic_tasks`.

Examples::

    python -m benchmarks.synthetic --tasks grouped27 --methods gp,random --seeds 1 \\
        --n-trials 15 --out benchmarks/_work/synthetic-smoke
    python -m benchmarks.synthetic --jobs 2 --out benchmarks/_work/synthetic   # everything
    python -m benchmarks.synthetic --report-only --out benchmarks/_work/synthetic
"""

from __future__ import annotations

import argparse
from pathlib import Path
import time
from typing import Any

import numpy as np
import optuna

from benchmarks import _common as common
from benchmarks import _jobs
from benchmarks import _methods
from benchmarks import _plots
from benchmarks._synthetic_tasks import make_task
from benchmarks._synthetic_tasks import optimum_slsqp
from benchmarks._synthetic_tasks import SyntheticTask
from benchmarks._synthetic_tasks import task_summary
from benchmarks._synthetic_tasks import TASKS
from optuna_bocr import BOCRSampler
from optuna_bocr.keys import ACTUAL_PARAMS_KEY
from optuna_bocr.keys import FLOPS_RATIO_KEY

CHECKPOINTS = (25, 50, 100, 150)

# -- Running ----------------------------------------------------------------------------------


def make_objective(task: SyntheticTask) -> Any:
    """Optuna objective of a task: suggest ratios, clip, record actual ratios, score."""
    names = task.names

    def objective(trial: optuna.Trial) -> float:
        t0 = time.perf_counter()
        proposed = np.array([trial.suggest_float(n, task.lbound, 1.0) for n in names])
        actual = task.clip(proposed)
        value = float(task.score_actual(actual))
        trial.set_user_attr(
            ACTUAL_PARAMS_KEY, {n: float(v) for n, v in zip(names, actual, strict=True)}
        )
        trial.set_user_attr(FLOPS_RATIO_KEY, float(task.flops_ratio(actual)))
        trial.set_user_attr(common.OBJECTIVE_SECONDS_ATTR, time.perf_counter() - t0)
        return value

    return objective


def run_one(
    task_name: str,
    method: str,
    seed: int,
    n_trials: int,
    out: str,
    storage: str | None,
    distance: str | None,
    threads: int,
    fallback: bool = True,
) -> None:
    """Run (or resume) one (task, method, seed) study and write its JSON record.

    ``fallback``: BOCR's ``unstructured_fallback`` (``False``: clusters even from features
    that fail the structure test, as the sampler's and the command line's default).
    """
    _jobs.limit_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = common.run_path(Path(out), task_name, method, seed)
    if path.exists():
        import json

        old = json.loads(path.read_text())
        if old.get("n_trials", 0) >= n_trials:
            print(f"[skip] {path.name}: already has {old['n_trials']} trials", flush=True)
            return
    task = make_task(task_name)
    info = task_summary(task)
    sampler, settings = _methods.make_sampler(
        method,
        seed=seed,
        search_space=task.search_space,
        features=task.features,
        n_trials=n_trials,
        n_clusters=task.n_clusters,
        bridge_clusters=task.bridge_clusters,
        distance=distance,
        # Features that fail BOCR's structure test (hartmann6-50's i.i.d. ones; the other
        # tasks' pass it) give one variable per parameter instead of arbitrary clusters,
        # unless --cluster-anyway.
        unstructured_fallback=fallback,
    )
    if isinstance(sampler, BOCRSampler):  # What the structure test decided
        settings = {
            **settings,
            "structure_pvalue": sampler.structure_pvalue,
            "stage_sizes": sampler.stage_sizes,
        }
    timed = common.TimedSampler(sampler)
    study = optuna.create_study(
        direction="maximize",
        sampler=timed,
        storage=storage,
        study_name=f"synthetic-{task_name}-{method}-seed{seed}",
        load_if_exists=storage is not None,
    )
    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    t0 = time.perf_counter()
    study.optimize(make_objective(task), n_trials=max(0, n_trials - done))
    records = common.trial_records(study)
    values = [r["value"] for r in records if r["state"] == "COMPLETE"][:n_trials]
    best = common.best_so_far(values)
    regret = (info["f_star"] - best[-1]) / (info["f_star"] - info["f_ref"])
    common.write_json(
        path,
        {
            "benchmark": "synthetic",
            "task": task_name,
            "method": method,
            "seed": seed,
            "n_trials": len(values),
            "sampler": settings,
            "task_info": info,
            "wall_seconds": time.perf_counter() - t0,
            "trials": records,
        },
    )
    sampler_s = sum(r["sampler_seconds"] or 0.0 for r in records)
    print(
        f"[done] {task_name:13s} {method:13s} seed {seed}: {len(values)} trials, "
        f"final regret {regret:.4f}, sampler {sampler_s:.1f} s",
        flush=True,
    )


# -- Report -----------------------------------------------------------------------------------


def _last_stage_start(trials: list[dict[str, Any]]) -> int | None:
    """Number of the first trial in the run's last BOCR stage.

    ``None`` for other samplers (no stage recorded) and for runs that never left their first
    stage.
    """
    firsts = common.stage_starts(trials)
    last = max(firsts, default=0)
    return firsts[last] if last > 0 else None


def _median_trial(numbers: list[int | None]) -> str:
    """Median of the runs' trial numbers (``-`` if none has one), and the range."""
    known = sorted(n for n in numbers if n is not None)
    if not known:
        return "-"
    return f"{float(np.median(known)):g} ({known[0]}-{known[-1]})"


def report(out: Path, tasks: list[str], methods: list[str]) -> str:
    """Tables (markdown), raw CSV and the best-so-far plot from the run records in ``out``."""
    runs = [r for r in common.load_runs(out) if r.get("benchmark") == "synthetic"]
    lines = ["# Synthetic benchmark results", ""]
    csv_rows = ["task,method,seed,trial,value,best_so_far,normalised_regret,sampler_s,objective_s"]
    curves: dict[str, dict[str, np.ndarray]] = {}
    titles = {}
    for task_name in tasks:
        task_runs = [r for r in runs if r["task"] == task_name and r["method"] in methods]
        if not task_runs:
            continue
        info = task_runs[0]["task_info"]
        gap = info["f_star"] - info["f_ref"]
        n_max = max(r["n_trials"] for r in task_runs)
        titles[task_name] = f"{task_name} (normalised regret)"
        lines += [
            f"## {task_name}",
            "",
            f"f* = {info['f_star']:.6g}, f_ref (median random) = {info['f_ref']:.6g}; "
            + (
                f"best normalised regret with one ratio per true sensitivity group: "
                f"{info['tied_regret']:.4f}; with one ratio per stage (the groups the "
                f"features reveal): {info.get('tied_feature_regret', -1):.4f}."
                if info["tied_regret"] >= 0
                else "no group structure."
            ),
            "",
        ]
        bocr = [r["sampler"] for r in task_runs if "stage_sizes" in r.get("sampler", {})]
        if bocr:
            lines += [
                f"BOCR's structure test on the features: p = {bocr[0]['structure_pvalue']}; "
                f"stage sizes of the BOCR variants: "
                + ", ".join(sorted({str(b["stage_sizes"]) for b in bocr})),
                "",
            ]
        cps = [c for c in CHECKPOINTS if c <= n_max]
        if n_max not in cps:
            cps.append(n_max)
        header = (
            ["method", "seeds"]
            + [f"regret @{c}" for c in cps]
            + ["trials to 95% of gap", "sampler s/trial (median)", "sampler s/trial (last 10)"]
            + ["last stage from trial (median)"]
        )
        rows = []
        curves[task_name] = {}
        for method in methods:
            mr = sorted((r for r in task_runs if r["method"] == method), key=lambda r: r["seed"])
            if not mr:
                continue
            n = min(r["n_trials"] for r in mr)
            regrets = []
            hits: list[int | None] = []
            stimes: list[float] = []
            stimes_last: list[float] = []
            last_stage: list[int | None] = []
            for r in mr:
                comp = [t for t in r["trials"] if t["state"] == "COMPLETE"][:n]
                last_stage.append(_last_stage_start(comp))
                best = common.best_so_far(t["value"] for t in comp)
                reg = (info["f_star"] - best) / gap
                regrets.append(reg)
                hits.append(common.first_reaching(reg, 0.05, maximize=False))
                st = [t["sampler_seconds"] for t in comp if t["sampler_seconds"] is not None]
                stimes += st
                stimes_last += st[-10:]
                for t, b, g in zip(comp, best, reg, strict=True):
                    csv_rows.append(
                        f"{task_name},{method},{r['seed']},{t['number']},{t['value']!r},"
                        f"{float(b)!r},{float(g)!r},{t['sampler_seconds']!r},{t['objective_seconds']!r}"
                    )
            arr = np.vstack(regrets)
            curves[task_name][method] = np.maximum(arr, 1e-6)
            med = np.median(arr, axis=0)
            cells = [f"{med[c - 1]:.4f}" if c <= n else "-" for c in cps]
            rows.append(
                [_methods.METHOD_LABELS.get(method, method), str(len(mr))]
                + cells
                + [
                    common.median_count(hits, n),
                    common.fmt_seconds(float(np.median(stimes)) if stimes else None),
                    common.fmt_seconds(float(np.median(stimes_last)) if stimes_last else None),
                    _median_trial(last_stage),
                ]
            )
        lines += [common.markdown_table(header, rows), ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "raw.csv").write_text("\n".join(csv_rows) + "\n")
    if curves:
        _plots.plot_curves(
            curves, out / "synthetic.png", ylabel="normalised regret", logy=True, titles=titles
        )
        lines += ["![best-so-far curves](synthetic.png)", ""]
    text = "\n".join(lines)
    (out / "results.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Tasks: " + ", ".join(TASKS) + ". Methods: " + ", ".join(_methods.KNOWN_METHODS),
    )
    parser.add_argument("--tasks", default="all", help="comma-separated tasks (default all)")
    parser.add_argument("--methods", default="all", help="comma-separated methods (default all)")
    parser.add_argument(
        "--seeds",
        default="5",
        help="N (seeds 0..N-1), 'a-b', 'a,b,c' or 'a,' (seed a alone; default 5)",
    )
    parser.add_argument("--n-trials", type=int, default=150, help="trials per run (150)")
    parser.add_argument(
        "--out",
        default="benchmarks/_work/synthetic",
        help="output directory (run records, raw.csv, results.md, synthetic.png)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch/BLAS threads per process (default 1)"
    )
    parser.add_argument(
        "--storage", default=None, help="Optuna storage URL (default: in-memory per run)"
    )
    parser.add_argument(
        "--distance", default=None, choices=["eu", "js", "st"], help="BOCR feature distance"
    )
    parser.add_argument(
        "--cluster-anyway",
        action="store_true",
        help="BOCR clusters features that fail its structure test too (the sampler's default) "
        "instead of searching one variable per parameter (unstructured_fallback)",
    )
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report")
    parser.add_argument(
        "--check-optimum", action="store_true", help="print f*, f_ref and an SLSQP cross-check"
    )
    args = parser.parse_args(argv)
    tasks = common.parse_list(args.tasks, TASKS)
    synthetic_methods = [
        m for m in _methods.KNOWN_METHODS if m not in _methods.PRUNING_ONLY_METHODS
    ]
    methods = common.parse_list(args.methods, synthetic_methods, _methods.ALL_METHODS)
    seeds = common.parse_seeds(args.seeds)
    _methods.check_packages(methods)
    out = Path(args.out)

    if args.check_optimum:
        for name in tasks:
            task = make_task(name)
            info = task_summary(task)
            check = optimum_slsqp(task)
            print(
                f"{name}: f*={info['f_star']:.6f} (SLSQP best {check:.6f}), "
                f"f_ref={info['f_ref']:.4f}, tied-groups regret={info['tied_regret']:.4f}, "
                f"tied-feature-groups regret={info['tied_feature_regret']:.4f}, "
                f"FLOPs at optimum={info['flops_at_optimum']:.4f}"
            )
        return
    if not args.report_only:
        jobs = [
            (
                t,
                m,
                s,
                args.n_trials,
                str(out),
                args.storage,
                args.distance,
                args.threads,
                not args.cluster_anyway,
            )
            for t in tasks
            for m in methods
            for s in seeds
        ]
        print(
            f"{len(jobs)} runs ({len(tasks)} tasks x {len(methods)} methods x "
            f"{len(seeds)} seeds), {args.n_trials} trials each, {args.jobs} process(es)"
        )
        if args.storage is not None:
            # Create the tables once, before the workers: Optuna's first-time schema setup
            # fails when two processes run it on a new SQLite file at once.
            optuna.storages.RDBStorage(args.storage)
        _jobs.run_jobs(run_one, jobs, args.jobs)
    print(report(out, tasks, methods))
    print(f"\nwritten: {out / 'results.md'}, {out / 'raw.csv'}, {out / 'synthetic.png'}")


if __name__ == "__main__":
    main()
