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
exactly the original at 200 trials. ``--methods all`` runs these BOCR variants, clusters
only, and Optuna's GP, TPE, CMA-ES and random samplers; ``bocr-early`` (gradual rollback with
stagnation checked from trial 30 and 60), ``bocr-box`` (the defaults with the top-k box) and
``bocr-actual`` (the defaults with the GP observing the clipped ratios) run only when named.

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
import math
import os
from pathlib import Path
import time
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from benchmarks import _common as common
from optuna_bocr.keys import CHECKPOINT_SHA256_KEY

CHECKPOINTS = (25, 50, 100, 200)

DATASET = "fashion-mnist"

TASKS: dict[str, dict[str, Any]] = {
    "resnet20": {"model": "resnet20", "lbound": 0.1, "n_clusters": 3, "bridge_clusters": 6},
    "resnet56": {"model": "resnet56", "lbound": 0.1, "n_clusters": 3, "bridge_clusters": 9},
    "mobilenet_v1": {
        "model": "mobilenet_v1",
        "lbound": 0.2,
        "n_clusters": 6,
        "bridge_clusters": 10,
    },
}

_CACHE: dict[str, Any] = {}  # per-process cache of the data splits and objectives


# -- Setup ------------------------------------------------------------------------------------


COMMITTED_CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
"""Trained checkpoints kept in the repository (with their fingerprints in its README.md):
every machine prunes the same networks and no run waits for a retrain."""


def checkpoint_path(args: argparse.Namespace, task: str) -> Path:
    """The task's checkpoint: the committed one if the repository has it, else the cache."""
    model = TASKS[task]["model"]
    tag = f"e{args.train_epochs:g}" + (
        f"-m{args.train_max_images}" if args.train_max_images else ""
    )
    name = f"{model}-{DATASET}-{tag}.pt"
    committed = COMMITTED_CHECKPOINTS / name
    return committed if committed.exists() else Path(args.work_dir) / "checkpoints" / name


def get_splits(args: argparse.Namespace) -> Any:
    """The data splits (validation from the training set, data seed 0), cached."""
    key = f"splits-{args.val_size}"
    if key not in _CACHE:
        from optuna_bocr.data import load_splits

        _CACHE[key] = load_splits(DATASET, root=args.data_root, val_size=args.val_size, seed=0)
    return _CACHE[key]


def ensure_checkpoint(args: argparse.Namespace, task: str) -> Path:
    """Train the task's model once (if its checkpoint is missing) and return the path."""
    import torch

    from optuna_bocr.models import build_model
    from optuna_bocr.training import evaluate
    from optuna_bocr.training import train

    path = checkpoint_path(args, task)
    if path.exists():
        return path
    splits = get_splits(args)
    model = build_model(
        TASKS[task]["model"],
        num_classes=splits.num_classes,
        in_channels=splits.in_channels,
        seed=0,  # with train(seed=0): the same checkpoint on every run of the same settings
    )
    # Training on the CPU is deterministic for a given number of threads, not across them:
    # train on --train-threads (default: all cores) whatever --threads says.
    threads = torch.get_num_threads()
    torch.set_num_threads(args.train_threads or os.cpu_count() or threads)
    print(
        f"[train] {task}: {args.train_epochs} epochs on {DATASET} -> {path} "
        f"({torch.get_num_threads()} threads)",
        flush=True,
    )
    t0 = time.perf_counter()
    try:
        train(
            model,
            splits.train,
            epochs=args.train_epochs,
            device=args.device,
            seed=0,
            max_images=args.train_max_images,
            progress=True,
        )
    finally:
        torch.set_num_threads(threads)
    top1, _ = evaluate(model, splits.val, device=args.device)
    print(
        f"[train] {task}: val top-1 {top1:.2f}% after {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": model.cpu().state_dict(), "val_top1": top1}, tmp)
    tmp.replace(path)
    return path


def checkpoint_fingerprint(path: Path) -> str:
    """SHA-256 of a checkpoint's tensors (names, dtypes, shapes and values), 16 hex digits.

    Recorded on every study, so that resuming against a different checkpoint (one trained
    again after the cached file was lost, or with other settings) is refused instead of
    mixing two networks in one study.
    """
    import hashlib

    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def check_checkpoints(args: argparse.Namespace, jobs: list[tuple[Any, ...]]) -> None:
    """Refuse to resume studies that were run with another checkpoint than the cached one.

    Raises:
        SystemExit: Naming the studies, the fingerprints and what to do; nothing has run.
    """
    storage = get_storage(args.storage)
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    current: dict[str, str] = {}
    clashes = []
    for _, task, method, seed in jobs:
        summary = summaries.get(study_name(args, task, method, seed))
        if summary is None:
            continue
        if task not in current:
            current[task] = checkpoint_fingerprint(checkpoint_path(args, task))
        recorded = summary.user_attrs.get(CHECKPOINT_SHA256_KEY)
        if recorded is not None and recorded != current[task]:
            clashes.append(f"{summary.study_name} (run with {recorded})")
    if clashes:
        raise SystemExit(
            "Refusing to resume studies that were run with another checkpoint than "
            f"{', '.join(f'{checkpoint_path(args, t)} ({fp})' for t, fp in current.items())}: "
            + "; ".join(clashes)
            + ". Restore the checkpoint those studies used, or give another --storage (or "
            "--work-dir) to start new studies; nothing was run or changed."
        )


def get_objective(args: argparse.Namespace, task: str) -> Any:
    """The task's PruningObjective (built once per process)."""
    key = f"objective-{task}"
    if key not in _CACHE:
        from optuna_bocr.models import build_model
        from optuna_bocr.models import load_checkpoint
        from optuna_bocr.pruning import PruningObjective

        splits = get_splits(args)
        model = build_model(
            TASKS[task]["model"], num_classes=splits.num_classes, in_channels=splits.in_channels
        )
        load_checkpoint(model, checkpoint_path(args, task))
        t0 = time.perf_counter()
        _CACHE[key] = PruningObjective(
            model,
            calibration=splits.train,
            validation=splits.val,
            flops_ratio=args.flops_ratio,
            lbound=TASKS[task]["lbound"],
            device=args.device,
            n_calibration_images=args.n_calibration_images,
            autocast=args.autocast,
            evaluate_pruned=not args.masked_eval,
            seed=0,
        )
        obj = _CACHE[key]
        print(
            f"[setup] {task}: {len(obj.search_space)} prunable layers, unpruned val top-1 "
            f"{obj.baseline_top1:.2f}%, setup {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
    return _CACHE[key]


def get_storage(url: str) -> optuna.storages.BaseStorage:
    """RDB storage, or a JournalStorage log file for a plain path (no ``scheme://``).

    SQLite gets a long lock timeout so parallel jobs can share one file. A journal file is an
    append-only text log: commit it as the runs go, and a run that spans machines survives.
    """
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(url))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    return optuna.storages.RDBStorage(url)


def study_name(args: argparse.Namespace, task: str, method: str, seed: int) -> str:
    """Study name: task, budget, validation size, precision, evaluation, method and seed."""
    precision = "-autocast" if args.autocast else ""
    evaluation = "-masked" if args.masked_eval else ""
    return (
        f"pruning-{task}-flops{args.flops_ratio:g}-val{args.val_size}{precision}{evaluation}"
        f"-{method}-seed{seed}"
    )


# -- Running ----------------------------------------------------------------------------------


def run_one(args: argparse.Namespace, task: str, method: str, seed: int) -> None:
    """Run or resume one (task, method, seed) study."""
    if args.threads > 0:
        common.limit_threads(args.threads)
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
    sampler, settings = common.make_sampler(
        method,
        seed=seed,
        search_space=objective.search_space,
        features=objective.layer_features(),
        n_trials=args.n_trials,
        n_clusters=cfg["n_clusters"],
        bridge_clusters=cfg["bridge_clusters"],
        distance=args.distance,
    )
    if hasattr(sampler, "structure_pvalue"):  # BOCR: its verdict on the layer features
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
    study.set_user_attr("sampler", json.loads(json.dumps(settings, default=str)))
    study.set_user_attr(CHECKPOINT_SHA256_KEY, checkpoint_fingerprint(checkpoint_path(args, task)))
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        print(f"[resume] {name}: marking stale running trial {t.number} as FAIL", flush=True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    done = sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
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
        n_fail = sum(t.state == TrialState.FAIL for t in study.get_trials(deepcopy=False))
        if n_fail > args.n_trials:
            print(f"[stop] {name}: too many failed trials ({n_fail})", flush=True)
            break
        left = args.n_trials - done
    print(f"[done] {name}: best val top-1 {study.best_value:.2f}%", flush=True)


def run_job(args: argparse.Namespace, task: str, method: str, seed: int) -> None:
    """Process-pool entry point (top-level so it pickles)."""
    run_one(args, task, method, seed)


# -- Final evaluation -------------------------------------------------------------------------


def _value(trial: optuna.trial.FrozenTrial) -> float:
    return -math.inf if trial.value is None else float(trial.value)


def final_eval(args: argparse.Namespace, task: str, methods: list[str], seeds: list[int]) -> None:
    """Test accuracy of each method's best model, before and after a short fine-tune.

    Cached in ``out/final_<task>.json`` per (method, study, trial, fine-tune settings).
    """
    import torch

    from optuna_bocr.pruning import count_flops
    from optuna_bocr.training import evaluate
    from optuna_bocr.training import train

    path = Path(args.out) / f"final_{task}.json"
    cache: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    storage = get_storage(args.storage)
    splits = get_splits(args)
    test = splits.test
    if args.test_size:
        test = test.subset(range(min(args.test_size, len(test))))
    for method in methods:
        best: tuple[float, str, optuna.trial.FrozenTrial] | None = None
        for seed in seeds:
            name = study_name(args, task, method, seed)
            try:
                study = optuna.load_study(study_name=name, storage=storage)
            except KeyError:
                continue
            trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if trials:
                t = max(trials, key=_value)
                value = _value(t)
                if best is None or value > best[0]:
                    best = (value, name, t)
        if best is None:
            continue
        key = (  # "flops|": entries cached before the FLOPs were recorded are redone
            f"flops|{method}|{best[1]}|{best[2].number}|ft{args.finetune_epochs:g}"
            f"-m{args.finetune_max_images}-lr{args.finetune_lr:g}|test{args.test_size}"
        )
        if cache.get(method, {}).get("key") == key:
            continue
        objective = get_objective(args, task)
        if "baseline_test_top1" not in cache or cache.get("test_size") != args.test_size:
            from optuna_bocr.models import build_model
            from optuna_bocr.models import load_checkpoint

            model = build_model(
                TASKS[task]["model"],
                num_classes=splits.num_classes,
                in_channels=splits.in_channels,
            )
            load_checkpoint(model, checkpoint_path(args, task))
            cache["baseline_test_top1"] = evaluate(model, test, device=args.device)[0]
            cache["baseline_val_top1"] = objective.baseline_top1
            cache["test_size"] = args.test_size
        t0 = time.perf_counter()
        pruned = objective.export(best[2])
        flops = count_flops(pruned, (1, *objective.input_size)) / objective.original_flops
        top1 = evaluate(pruned, test, device=args.device)[0]
        ft_top1 = None
        if args.finetune_epochs > 0:
            torch.manual_seed(0)
            train(
                pruned,
                splits.train,
                epochs=args.finetune_epochs,
                lr=args.finetune_lr,
                device=args.device,
                seed=0,
                max_images=args.finetune_max_images,
                progress=False,
            )
            ft_top1 = evaluate(pruned, test, device=args.device)[0]
        cache[method] = {
            "key": key,
            "study": best[1],
            "trial": best[2].number,
            "val_top1": best[0],
            "flops_ratio": flops,
            "test_top1": top1,
            "test_top1_finetuned": ft_top1,
            "seconds": time.perf_counter() - t0,
        }
        print(
            f"[final] {task} {method}: best val {best[0]:.2f}% ({best[1]} #{best[2].number}), "
            f"FLOPs {flops:.3f} of the unpruned model, test {top1:.2f}%"
            + (f", after fine-tune {ft_top1:.2f}%" if ft_top1 is not None else ""),
            flush=True,
        )
        common.write_json(path, cache)


# -- Report -----------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "not measured (run without --skip-final)" if value is None else f"{value:.2f}%"


def _range(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{np.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def _stage_changes(data: dict[str, dict[int, list[dict[str, Any]]]]) -> list[str]:
    """Markdown lines: the trial numbers at which each BOCR study entered a new stage."""
    rows = []
    for method, per_seed in data.items():
        for seed, recs in sorted(per_seed.items()):
            firsts: dict[int, int] = {}
            for r in recs:
                if r["stage"] is not None:
                    firsts.setdefault(int(r["stage"]), r["number"])
            if firsts:
                changes = [str(n) for stage, n in sorted(firsts.items()) if stage > 0]
                rows.append(
                    [
                        common.METHOD_LABELS.get(method, method),
                        str(seed),
                        ", ".join(changes) or "none",
                    ]
                )
    if not rows:
        return []
    return [
        "Trial numbers at which each BOCR study entered its next stage (bridge, then one "
        "ratio per layer for gradual rollback):",
        "",
        common.markdown_table(["method", "seed", "stage changes"], rows),
        "",
    ]


def _paired_lines(bests: dict[str, dict[int, np.ndarray]], cps: list[int]) -> list[str]:
    """BOCR (defaults) against GPSampler and CMA-ES, paired per seed, at each checkpoint."""
    if "bocr" not in bests:
        return []
    rows = []
    for ref in ("gp", "cmaes", "bocr-direct"):
        if ref not in bests:
            continue
        cells = []
        for c in cps:
            d = common.paired_difference(bests["bocr"], bests[ref], c)
            cells.append(
                "-" if d is None else f"{d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}] ({d[3]}/{d[4]})"
            )
        rows.append([common.METHOD_LABELS.get(ref, ref), *cells])
    if not rows:
        return []
    return [
        "BOCR (defaults) minus each method, paired by seed: mean difference of the best "
        "validation top-1 so far (points), 95% bootstrap interval of the mean (4000 "
        "resamples of the seeds), and the seeds where BOCR is ahead:",
        "",
        common.markdown_table(["against", *[f"@{c}" for c in cps]], rows),
        "",
    ]


def report(
    args: argparse.Namespace, tasks: list[str], methods: list[str], seeds: list[int]
) -> str:
    """Tables, raw CSV and plot from the studies in the storage."""
    storage = get_storage(args.storage)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Pruning benchmark results", ""]
    csv_rows = ["task,method,seed,trial,state,val_top1,best_so_far,sampler_s,objective_s,stage"]
    curves: dict[str, dict[str, np.ndarray]] = {}
    for task in tasks:
        data: dict[str, dict[int, list[dict[str, Any]]]] = {}
        structure: set[str] = set()  # BOCR's verdict on the layer features
        for method in methods:
            for seed in seeds:
                try:
                    study = optuna.load_study(
                        study_name=study_name(args, task, method, seed), storage=storage
                    )
                except KeyError:
                    continue
                recs = common.trial_records(study)
                data.setdefault(method, {})[seed] = recs
                settings = study.user_attrs.get("sampler", {})
                if settings.get("structure_pvalue") is not None:
                    structure.add(
                        f"p = {settings['structure_pvalue']:g} "
                        f"(stage sizes {settings.get('stage_sizes')})"
                    )
                best = -math.inf
                for r in recs:
                    if r["state"] == "COMPLETE" and r["value"] is not None:
                        best = max(best, r["value"])
                    csv_rows.append(
                        f"{task},{method},{seed},{r['number']},{r['state']},{r['value']!r},"
                        f"{best!r},{r['sampler_seconds']!r},{r['objective_seconds']!r},"
                        f"{r['stage']!r}"
                    )
        if not data:
            continue
        n_max = max(
            sum(r["state"] == "COMPLETE" for r in recs)
            for per_seed in data.values()
            for recs in per_seed.values()
        )
        final_path = out / f"final_{task}.json"
        final = json.loads(final_path.read_text()) if final_path.exists() else {}
        lines += [
            f"## {task}",
            "",
            f"{args.val_size} validation images, FLOPs budget {args.flops_ratio:g}; "
            f"unpruned model: val top-1 {_pct(final.get('baseline_val_top1'))}, test top-1 "
            f"{_pct(final.get('baseline_test_top1'))}"
            + (f" (first {args.test_size} test images)" if args.test_size else "")
            + ".",
            "",
        ]
        if structure:
            lines += [
                "BOCR's structure test on the layer features (clusters kept as asked): "
                + "; ".join(sorted(structure)),
                "",
            ]
        # best-so-far per method and seed
        bests: dict[str, dict[int, np.ndarray]] = {}
        for method, per_seed in data.items():
            for seed, recs in per_seed.items():
                vals = [r["value"] for r in recs if r["state"] == "COMPLETE"][: args.n_trials]
                if vals:
                    bests.setdefault(method, {})[seed] = common.best_so_far(vals)
        gp_final = [c[-1] for c in bests.get("gp", {}).values()]
        threshold = float(np.median(gp_final)) if gp_final else math.nan
        cps = [c for c in CHECKPOINTS if c <= n_max]
        if n_max not in cps:
            cps.append(n_max)
        header = (
            ["method", "seeds"]
            + [f"best val @{c}" for c in cps]
            + [
                "trials to GP's final best",
                "sampler time",
                "eval time",
                "sampler share",
                "best model: FLOPs / val / test / test fine-tuned",
            ]
        )
        rows = []
        curves[task] = {}
        for method in methods:
            if method not in bests:
                continue
            curves_of_seed = bests[method]
            cells = []
            for c in cps:
                vals = [float(b[c - 1]) for b in curves_of_seed.values() if len(b) >= c]
                cells.append(
                    _range(vals)
                    + ("" if len(vals) == len(curves_of_seed) else f" (n={len(vals)})")
                )
            hits = [common.first_reaching(b, threshold) for b in curves_of_seed.values()]
            s_tot = [
                sum(r["sampler_seconds"] or 0.0 for r in data[method][s]) for s in curves_of_seed
            ]
            e_tot = [
                sum(r["objective_seconds"] or 0.0 for r in data[method][s]) for s in curves_of_seed
            ]
            share = [s / (s + e) for s, e in zip(s_tot, e_tot, strict=True) if s + e > 0]
            fin = final.get(method)
            fin_txt = "-"
            if fin:
                ft = fin["test_top1_finetuned"]
                flops = fin.get("flops_ratio")
                fin_txt = (
                    (f"{flops:.3f} / " if flops is not None else "- / ")
                    + f"{fin['val_top1']:.2f} / {fin['test_top1']:.2f} / "
                ) + (f"{ft:.2f}" if ft is not None else "-")
            rows.append(
                [common.METHOD_LABELS.get(method, method), str(len(curves_of_seed))]
                + cells
                + [
                    common.median_count(hits, n_max) if math.isfinite(threshold) else "-",
                    common.fmt_seconds(float(np.median(s_tot))),
                    common.fmt_seconds(float(np.median(e_tot))),
                    f"{100 * np.median(share):.1f}%" if share else "-",
                    fin_txt,
                ]
            )
            n = min(len(b) for b in curves_of_seed.values())
            curves[task][method] = np.vstack([b[:n] for b in curves_of_seed.values()])
        lines += [
            common.markdown_table(header, rows),
            "",
            "Best val: median [min, max] over seeds of the best validation top-1 (%) so far. "
            f"GP's final best (median over seeds): {threshold:.2f}%. Times: median over seeds "
            "of the total per run. Best model: the best trial over all seeds of the method, "
            "exported (FLOPs: of the physically pruned model, as a fraction of the "
            f"unpruned one) and tested; fine-tuned {args.finetune_epochs:g} epoch(s) of "
            f"{args.finetune_max_images or 'all'} images at lr {args.finetune_lr:g}.",
            "",
        ]
        lines += _paired_lines(bests, cps)
        lines += _stage_changes(data)
    (out / "raw.csv").write_text("\n".join(csv_rows) + "\n")
    if curves:
        common.plot_curves(
            curves, out / "pruning.png", ylabel="best validation top-1 (%)", zoom_from=10
        )
        lines += ["![best-so-far curves](pruning.png)", ""]
    text = "\n".join(lines)
    (out / "results.md").write_text(text)
    return text


# -- CLI --------------------------------------------------------------------------------------


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
        + ", ".join(common.KNOWN_METHODS)
        + " or all (all but "
        + ", ".join(common.EXTRA_METHODS)
        + ")",
    )
    p.add_argument("--seeds", default="3", help="N (seeds 0..N-1), 'a-b' or 'a,b,c'")
    p.add_argument("--n-trials", type=int, default=200, help="complete trials per study")
    p.add_argument("--flops-ratio", type=float, default=0.5, help="FLOPs budget")
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
        help="evaluate trials under torch.autocast (bfloat16 on CPU, float16 on CUDA); the "
        "study names get an -autocast suffix, so such studies never mix with float32 ones",
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
    p.add_argument("--report-only", action="store_true", help="only rebuild the report")
    args = p.parse_args(argv)
    tasks = common.parse_list(args.tasks, list(TASKS))
    methods = common.parse_list(args.methods, common.KNOWN_METHODS, common.ALL_METHODS)
    seeds = common.parse_seeds(args.seeds)
    args.log_every = max(1, args.log_every)
    if args.threads > 0:
        common.limit_threads(args.threads)

    if not args.report_only:
        t0 = time.perf_counter()
        for task in tasks:
            ensure_checkpoint(args, task)
        # Seed-major: a run stopped part-way has the same seeds for every method.
        jobs = [(args, t, m, s) for t in tasks for s in seeds for m in methods]
        # Create the storage's tables here, once: Optuna's first-time schema setup fails
        # (IntegrityError on alembic_version) when two workers run it on a new file at once.
        get_storage(args.storage)
        check_checkpoints(args, jobs)
        print(
            f"{len(jobs)} studies, {args.n_trials} trials each, {args.jobs} process(es)",
            flush=True,
        )
        common.run_jobs(run_job, jobs, args.jobs)
        if not args.skip_final:
            for task in tasks:
                final_eval(args, task, methods, seeds)
        print(f"total {common.fmt_seconds(time.perf_counter() - t0)}", flush=True)
    print(report(args, tasks, methods, seeds))
    print(f"\nwritten: {Path(args.out) / 'results.md'}, raw.csv, pruning.png")


if __name__ == "__main__":
    main()
