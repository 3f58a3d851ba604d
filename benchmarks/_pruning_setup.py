"""The pruning benchmark's setup: tasks, checkpoints, data, objectives and storages."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import re
import time
from typing import Any

import optuna

from benchmarks import _methods
from optuna_bocr.keys import CHECKPOINT_SHA256_KEY

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

COMMITTED_CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
"""Trained checkpoints kept in the repository (with their fingerprints in its README.md):
every machine prunes the same networks and no run waits for a retrain."""


SAMPLER_SETTINGS_KEY = "sampler"
"""Study user attr: the settings of the study's sampler, as ``make_sampler`` returned them."""


def checkpoint_path(args: argparse.Namespace, task: str) -> Path:
    """The task's checkpoint: the committed one if the repository has it, else the cache."""
    model = TASKS[task]["model"]
    tag = (
        f"e{args.train_epochs:g}"
        + (f"-m{args.train_max_images}" if args.train_max_images else "")
        + ("-autocast" if getattr(args, "train_autocast", False) else "")
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
            autocast=getattr(args, "train_autocast", False),
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


def existing_studies(args: argparse.Namespace) -> dict[str, optuna.study.StudySummary]:
    """The studies already in ``--storage``, by name (read once for the checks below)."""
    storage = get_storage(args.storage)
    return {s.study_name: s for s in optuna.get_all_study_summaries(storage)}


def check_checkpoints(
    args: argparse.Namespace,
    jobs: list[tuple[Any, ...]],
    summaries: dict[str, optuna.study.StudySummary],
) -> None:
    """Refuse to resume studies that were run with another checkpoint than the cached one.

    Raises:
        SystemExit: Naming the studies, the fingerprints and what to do; nothing has run.
    """
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


def check_schedules(
    args: argparse.Namespace,
    jobs: list[tuple[Any, ...]],
    summaries: dict[str, optuna.study.StudySummary],
) -> None:
    """Refuse to resume studies whose rollback schedule was scaled to another trial budget.

    ``bocr-direct``, ``bocr-gradual`` and ``bocr-early`` scale the paper's schedule to
    ``--n-trials``; a study run with one budget and resumed with another would switch
    schedules part-way (``bocr-paper`` keeps the published schedule at any budget).

    Raises:
        SystemExit: Naming the studies, both schedules and what to do; nothing has run.
    """
    clashes = []
    for _, task, method, seed in jobs:
        if method not in _methods.BUDGET_SCALED_METHODS:
            continue
        name = study_name(args, task, method, seed)
        summary = summaries.get(name)
        recorded = summary.user_attrs.get(SAMPLER_SETTINGS_KEY) if summary is not None else None
        if not isinstance(recorded, dict) or "rollback_at" not in recorded:
            continue
        wanted = _methods.rollback_schedule(args.n_trials, method)["rollback_at"]
        if list(recorded["rollback_at"]) != list(wanted):
            clashes.append(
                f"{name} (rollback at {list(recorded['rollback_at'])}, "
                f"--n-trials {args.n_trials} gives {list(wanted)})"
            )
    if clashes:
        raise SystemExit(
            "Refusing to resume studies whose rollback schedule was scaled to another trial "
            "budget: " + "; ".join(clashes) + ". Run them with the --n-trials they were "
            "started with, use bocr-paper for the published 200-trial schedule at any budget, "
            "or give another --storage to start new studies; nothing was run or changed."
        )


def trained_model(args: argparse.Namespace, task: str) -> Any:
    """A fresh copy of the task's network with its benchmark checkpoint loaded."""
    from optuna_bocr.models import build_model
    from optuna_bocr.models import load_checkpoint

    splits = get_splits(args)
    model = build_model(
        TASKS[task]["model"], num_classes=splits.num_classes, in_channels=splits.in_channels
    )
    load_checkpoint(model, checkpoint_path(args, task))
    return model


def width_features(args: argparse.Namespace, task: str, names: list[str]) -> dict[str, Any]:
    """``log2`` of each prunable layer's input channels: clusters of equally wide layers.

    In the CIFAR ResNets these are the stages (16, 32 and 64 channels); in MobileNetV1 the
    pointwise convolutions of one width. BOCR compares them with distance ``"st"``.
    """
    import numpy as np

    model = trained_model(args, task)
    return {n: np.log2([float(model.get_submodule(n).in_channels)]) for n in names}


def get_objective(args: argparse.Namespace, task: str) -> Any:
    """The task's PruningObjective (built once per process and settings)."""
    # Every setting that shapes the objective is in the key: one process (a test run, a
    # report) may build objectives for several sizes, checkpoints or budgets.
    settings = (
        task, getattr(args, "budget_rule", "wall"), args.flops_ratio, args.val_size,
        args.n_calibration_images, str(checkpoint_path(args, task)), args.autocast,
        args.masked_eval, args.device,
    )  # fmt: skip
    key = f"objective-{settings}"
    if key not in _CACHE:
        from optuna_bocr.pruning import PruningObjective

        splits = get_splits(args)
        model = trained_model(args, task)
        t0 = time.perf_counter()
        _CACHE[key] = PruningObjective(
            model,
            calibration=splits.train,
            validation=splits.val,
            flops_ratio=args.flops_ratio,
            budget_rule=getattr(args, "budget_rule", "wall"),  # every study named without -scale
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
    """Study name: task, budget, validation size, precision, evaluation, method and seed.

    A BOCR method run with ``--distance`` gets it as a suffix of the method (``bocr-js``), so
    studies with other features never resume each other.
    """
    precision = "-autocast" if args.autocast else ""
    evaluation = "-masked" if args.masked_eval else ""
    if getattr(args, "budget_rule", "wall") == "scale":
        evaluation += "-scale"
    if getattr(args, "distance", None) and method in _methods.BOCR_METHODS:
        method = f"{method}-{args.distance}"
    return (
        f"pruning-{task}-flops{args.flops_ratio:g}-val{args.val_size}{precision}{evaluation}"
        f"-{method}-seed{seed}"
    )


def method_and_seed(name: str) -> tuple[str, int] | None:
    """``(method, seed)`` of a study named by :func:`study_name`, or ``None``."""
    m = re.search(r"-((?:bocr|gp|tpe|cmaes|random)[a-z0-9-]*)-seed(\d+)$", name)
    return (m.group(1), int(m.group(2))) if m else None
