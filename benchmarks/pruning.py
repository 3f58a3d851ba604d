"""Real pruning benchmark: BOCR against Optuna's samplers on pruned CNNs.

Each task is a CNN trained on Fashion-MNIST (trained once by this script with
``optuna_bocr.training.train``; the checkpoint is cached under ``--work-dir``, which is
outside git), pruned to a FLOPs budget by ``optuna_bocr.pruning.PruningObjective``. The
objective is top-1 accuracy (%) on a validation split drawn from the training set, without
fine-tuning. The validation split, the calibration images and the checkpoint are the same for
every method and seed (data seed 0); the run seed only seeds the sampler.

Every (task, method, seed) study lives in one storage (``--storage``: a SQLite URL, or a
plain path for a JournalStorage log file, which can be committed as the runs go); re-running
the same command resumes: finished trials are kept, stale RUNNING trials of a killed run are
marked FAIL, and only the missing trials are run. Checkpoints committed under
``benchmarks/checkpoints/`` are used as they are; a missing one is trained from seeded
weights on all cores, so a lost one is trained again identically on the same kind of
machine; every study records its fingerprint, and resuming against another checkpoint is
refused before anything runs. After the searches, each method's best trial
(over seeds) is exported (physical pruning), evaluated on the test split, briefly fine-tuned
and evaluated again (cached in ``--out``). The report (``results.md``, ``raw.csv``,
``pruning.png``) is rebuilt from the storage every time (``--report-only`` for just that).

Tasks: ``resnet20`` (9 prunable layers; BOCR with 3 clusters, bridge 6; lbound 0.1),
``resnet56`` (27 layers; 3 clusters, bridge 9; lbound 0.1), ``mobilenet_v1`` (6 clusters,
bridge 10; lbound 0.2); all at 50% FLOPs unless ``--flops-ratio`` is given. ``bocr`` is
BOCRSampler with its defaults (stage patience relative to the stage's size, whole range after
a rollback); ``bocr-direct`` / ``bocr-gradual`` use the paper's schedule (direct at 100,
gradual at 100 and 150, patience 20 from 80/130, top-k box) scaled by ``n_trials / 200``, so
exactly the original at 200 trials (a study is never resumed with another budget's schedule);
``bocr-paper`` is gradual rollback with the original schedule at any budget, so its 200-trial
study extends its 100-trial one. ``--methods all`` runs these BOCR variants, clusters only,
and Optuna's GP, TPE, CMA-ES and random samplers; ``bocr-early`` (gradual rollback with
stagnation checked from trial 30 and 60), ``bocr-box`` (the defaults with the top-k box),
``bocr-actual`` (the GP observing the clipped ratios), ``bocr-trust`` (a trust region after
the first stage, first side 0.8), ``bocr-small`` (first side 0.2), ``bocr-mean`` (the box at
the best posterior mean), ``bocr-flat`` (no clusters) and ``bocr-random`` (random clusters)
run only when named. Setup lives in ``_pruning_setup.py``, the test-split evaluations in
``_pruning_final.py``, the report in ``_pruning_report.py``.

Examples::

    # tiny smoke run
    python -m benchmarks.pruning --tasks resnet20 --methods gp,random --seeds 1 --n-trials 3 \\
        --train-epochs 1 --train-max-images 2000 --val-size 500 --n-calibration-images 500 \\
        --test-size 1000 --finetune-max-images 1000 --out benchmarks/_work/pruning-smoke \\
        --storage sqlite:///benchmarks/_work/pruning-smoke/studies.db
    # the full benchmark (resumable)
    python -m benchmarks.pruning --tasks resnet56,mobilenet_v1 --seeds 3 --n-trials 200
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import time

import optuna
from optuna.trial import TrialState

from benchmarks import _common as common
from benchmarks import _jobs
from benchmarks import _methods
from benchmarks._probe_start import probe_features
from benchmarks._probe_start import PROBE_KEY
from benchmarks._probe_start import probe_start
from benchmarks._pruning_final import final_eval
from benchmarks._pruning_final import seed_tests
from benchmarks._pruning_report import report
from benchmarks._pruning_setup import check_checkpoints
from benchmarks._pruning_setup import check_schedules
from benchmarks._pruning_setup import checkpoint_fingerprint
from benchmarks._pruning_setup import checkpoint_path
from benchmarks._pruning_setup import COMMITTED_CHECKPOINTS
from benchmarks._pruning_setup import ensure_checkpoint
from benchmarks._pruning_setup import existing_studies
from benchmarks._pruning_setup import get_objective
from benchmarks._pruning_setup import get_splits
from benchmarks._pruning_setup import get_storage
from benchmarks._pruning_setup import SAMPLER_SETTINGS_KEY
from benchmarks._pruning_setup import study_name
from benchmarks._pruning_setup import TASKS
from benchmarks._pruning_setup import width_features
from optuna_bocr import BOCRSampler
from optuna_bocr.keys import CHECKPOINT_SHA256_KEY

__all__ = [
    "COMMITTED_CHECKPOINTS",
    "TASKS",
    "checkpoint_fingerprint",
    "checkpoint_path",
    "get_objective",
    "get_splits",
    "get_storage",
    "main",
    "run_one",
    "study_name",
]


# -- Running ----------------------------------------------------------------------------------


def run_one(args: argparse.Namespace, task: str, method: str, seed: int) -> None:
    """Run or resume one (task, method, seed) study."""
    if args.threads > 0:
        _jobs.limit_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = get_storage(args.storage)
    name = study_name(args, task, method, seed)
    # Check before building the objective (expensive) whether anything is left to do.
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
        done = sum(t.state == TrialState.COMPLETE for t in existing.get_trials(deepcopy=False))
        if done >= args.n_trials:
            print(f"[skip] {name}: {done} complete trials", flush=True)
            return
    except KeyError:
        pass
    objective = get_objective(args, task)
    cfg = TASKS[task]
    features, probe_record = objective.layer_features(), None
    if method == "bocr-kl":
        features, probe_record = probe_features(args, task)
    if method == "bocr-width":
        features = width_features(args, task, objective.layer_names)
    sampler, settings = _methods.make_sampler(
        method,
        seed=seed,
        search_space=objective.search_space,
        features=features,
        n_trials=args.n_trials,
        n_clusters=cfg["n_clusters"],
        bridge_clusters=cfg["bridge_clusters"],
        distance=args.distance,
        evaluation_key=objective.network_key,
    )
    if isinstance(sampler, BOCRSampler):  # its verdict on the layer features
        settings = {
            **settings,
            "structure_pvalue": sampler.structure_pvalue,
            "stage_sizes": sampler.stage_sizes,
        }
    study = optuna.create_study(
        direction="maximize",
        sampler=common.TimedSampler(sampler),
        # Every trial is scored on the whole validation split (as in BOCR); Optuna's default
        # MedianPruner would stop a third of them at a partial accuracy.
        pruner=optuna.pruners.NopPruner(),
        storage=storage,
        study_name=name,
        load_if_exists=True,
    )
    study.set_user_attr(SAMPLER_SETTINGS_KEY, json.loads(json.dumps(settings, default=str)))
    study.set_user_attr(CHECKPOINT_SHA256_KEY, checkpoint_fingerprint(checkpoint_path(args, task)))
    if probe_record is not None:
        study.set_user_attr(PROBE_KEY, probe_record)
    if method == "bocr-probe" and not study.get_trials(deepcopy=False):
        start, record = probe_start(args, task)
        study.set_user_attr(PROBE_KEY, record)
        study.enqueue_trial(start)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        print(f"[resume] {name}: marking stale running trial {t.number} as FAIL", flush=True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    done = sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
    failed_before = sum(t.state == TrialState.FAIL for t in study.get_trials(deepcopy=False))
    left = args.n_trials - done
    print(f"[start] {name}: {done} complete, {left} to go", flush=True)

    def timed_objective(trial: optuna.Trial) -> float:
        t0 = time.perf_counter()
        value = objective(trial)
        trial.set_user_attr(common.OBJECTIVE_SECONDS_ATTR, time.perf_counter() - t0)
        return value

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        n = sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
        if trial.state != TrialState.COMPLETE:
            print(f"  [{task} {method} s{seed}] trial {trial.number}: {trial.state.name}")
            return
        if n % args.log_every == 0 or n == args.n_trials:
            print(
                f"  [{task} {method} s{seed}] {n}/{args.n_trials}: top-1 {trial.value:.2f} "
                f"best {study.best_value:.2f} (sampler "
                f"{trial.user_attrs.get(common.SAMPLER_SECONDS_ATTR, 0.0):.2f} s, eval "
                f"{trial.user_attrs.get(common.OBJECTIVE_SECONDS_ATTR, 0.0):.2f} s)",
                flush=True,
            )

    # Count only complete trials: keep going until the budget of complete trials is met.
    while left > 0:
        study.optimize(timed_objective, n_trials=left, callbacks=[progress], catch=(Exception,))
        done = sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
        # Failures of earlier runs (a crash, a missing package) do not count against this one.
        n_fail = (
            sum(t.state == TrialState.FAIL for t in study.get_trials(deepcopy=False))
            - failed_before
        )
        if n_fail > args.n_trials:
            print(f"[stop] {name}: too many failed trials in this run ({n_fail})", flush=True)
            break
        left = args.n_trials - done
    print(f"[done] {name}: best val top-1 {study.best_value:.2f}%", flush=True)


def run_job(args: argparse.Namespace, task: str, method: str, seed: int) -> None:
    """Process-pool entry point (top-level so it pickles)."""
    run_one(args, task, method, seed)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--tasks",
        default="resnet56,mobilenet_v1",
        help="comma-separated: " + ", ".join(TASKS) + " or all",
    )
    p.add_argument(
        "--methods",
        default="all",
        help="comma-separated: "
        + ", ".join(_methods.KNOWN_METHODS)
        + " or all (all but "
        + ", ".join(_methods.EXTRA_METHODS)
        + ")",
    )
    p.add_argument(
        "--seeds", default="3", help="N (seeds 0..N-1), 'a-b', 'a,b,c' or 'a,' (seed a alone)"
    )
    p.add_argument("--n-trials", type=int, default=200, help="complete trials per study")
    p.add_argument("--flops-ratio", type=float, default=0.5, help="FLOPs budget")
    p.add_argument(
        "--budget-rule",
        default="wall",
        choices=["wall", "scale"],
        help="how requested ratios meet the budget (PruningObjective's budget_rule, whose "
        "default is 'scale'); 'wall' is the rule of every result before the section 'The "
        "budget rule' of benchmarks/RECORD.md, so their commands stay as they were; 'scale' "
        "studies get a -scale suffix",
    )
    p.add_argument("--val-size", type=int, default=5000, help="validation images (from train)")
    p.add_argument(
        "--n-calibration-images",
        type=int,
        default=3000,
        help="training images for the least-squares reconstruction",
    )
    p.add_argument(
        "--distance",
        default=None,
        choices=["eu", "js", "st"],
        help="BOCR feature distance (default: the sampler's)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:0, ...")
    p.add_argument(
        "--autocast",
        action="store_true",
        help="evaluate trials under torch.autocast (bfloat16; float16 on a GPU without "
        "bfloat16); the study names get an -autocast suffix, so such studies never mix with "
        "float32 ones",
    )
    p.add_argument(
        "--masked-eval",
        action="store_true",
        help="evaluate trials on the full-size network with the pruned channels zeroed "
        "rather than on the physically pruned copy (same accuracy up to rounding, slower); "
        "the study names get a -masked suffix",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="Fashion-MNIST directory (default: "
        "$OPTUNA_BOCR_DATA or /usr/share/datasets/fashion-mnist)",
    )
    p.add_argument("--work-dir", default="benchmarks/_work", help="checkpoint cache (gitignored)")
    p.add_argument("--train-epochs", type=float, default=15, help="epochs to train each model")
    p.add_argument(
        "--train-threads",
        type=int,
        default=0,
        help="torch threads for training a missing checkpoint (0 = all cores)",
    )
    p.add_argument(
        "--train-autocast",
        action="store_true",
        help="train a missing checkpoint in mixed precision, channels-last (bfloat16 on the "
        "CPU: 2.6x faster on one with bfloat16 units); the checkpoint's file name gets an "
        "-autocast suffix",
    )
    p.add_argument(
        "--train-max-images",
        type=int,
        default=None,
        help="images per training epoch (default all)",
    )
    p.add_argument(
        "--storage",
        default="sqlite:///benchmarks/_work/pruning/studies.db",
        help="Optuna storage URL holding every study (resumable)",
    )
    p.add_argument(
        "--out",
        default="benchmarks/_work/pruning",
        help="report directory (results.md, raw.csv, pruning.png, final_*.json)",
    )
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (1 on a GPU)")
    p.add_argument(
        "--threads", type=int, default=0, help="torch threads per process (0 = torch default)"
    )
    p.add_argument("--log-every", type=int, default=10, help="print progress every N trials")
    p.add_argument(
        "--test-size",
        type=int,
        default=None,
        help="evaluate on the first N test images only (default all 10,000)",
    )
    p.add_argument(
        "--finetune-epochs",
        type=float,
        default=1.0,
        help="fine-tune epochs of each method's best model (0 = none)",
    )
    p.add_argument(
        "--finetune-max-images", type=int, default=10000, help="images per fine-tune epoch"
    )
    p.add_argument("--finetune-lr", type=float, default=0.01, help="fine-tune learning rate")
    p.add_argument("--skip-final", action="store_true", help="skip the test / fine-tune step")
    p.add_argument(
        "--seed-tests",
        action="store_true",
        help="also test the best trial of every (method, seed) study on the test split (no "
        "fine-tuning) and compare the methods on it, paired by seed; works with --skip-final "
        "and with --report-only (then it runs no search)",
    )
    p.add_argument(
        "--reference",
        default="bocr",
        choices=_methods.BOCR_METHODS,
        help="the BOCR variant that the report compares with the other methods, paired by "
        "seed (default: %(default)s)",
    )
    p.add_argument("--report-only", action="store_true", help="only rebuild the report")
    args = p.parse_args(argv)
    tasks = common.parse_list(args.tasks, list(TASKS))
    methods = common.parse_list(args.methods, _methods.KNOWN_METHODS, _methods.ALL_METHODS)
    seeds = common.parse_seeds(args.seeds)
    _methods.check_packages(methods)
    args.log_every = max(1, args.log_every)
    if args.threads > 0:
        _jobs.limit_threads(args.threads)

    if not args.report_only:
        t0 = time.perf_counter()
        for task in tasks:
            ensure_checkpoint(args, task)
        # Seed-major: a run stopped part-way has the same seeds for every method.
        jobs = [(args, t, m, s) for t in tasks for s in seeds for m in methods]
        # Create the storage's tables here, once: Optuna's first-time schema setup fails
        # (IntegrityError on alembic_version) when two workers run it on a new file at once.
        get_storage(args.storage)
        studies = existing_studies(args)
        check_checkpoints(args, jobs, studies)
        check_schedules(args, jobs, studies)
        print(
            f"{len(jobs)} studies, {args.n_trials} trials each, {args.jobs} process(es)",
            flush=True,
        )
        _jobs.run_jobs(run_job, jobs, args.jobs)
        if not args.skip_final:
            for task in tasks:
                final_eval(args, task, methods, seeds)
        print(f"total {common.fmt_seconds(time.perf_counter() - t0)}", flush=True)
    if args.seed_tests:
        for task in tasks:
            seed_tests(args, task, methods, seeds)
    print(report(args, tasks, methods, seeds))
    print(f"\nwritten: {Path(args.out) / 'results.md'}, raw.csv, pruning.png")


if __name__ == "__main__":
    main()
