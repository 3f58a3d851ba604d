"""``optuna-bocr prune``: search per-layer pruning ratios in an Optuna study."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from collections.abc import Sequence
import copy
from pathlib import Path
import queue
import sys
from typing import Any
import warnings

import optuna
from optuna.trial import TrialState

from optuna_bocr.cli._common import baseline_path
from optuna_bocr.cli._common import build_model
from optuna_bocr.cli._common import check_model_name
from optuna_bocr.cli._common import check_writable
from optuna_bocr.cli._common import CLIError
from optuna_bocr.cli._common import first_line
from optuna_bocr.cli._common import fmt_count
from optuna_bocr.cli._common import load_data
from optuna_bocr.cli._common import load_study_or_none
from optuna_bocr.cli._common import load_weights
from optuna_bocr.cli._common import make_objective
from optuna_bocr.cli._common import open_storage
from optuna_bocr.cli._common import resolve_device
from optuna_bocr.cli._common import STUDY_CONFIG_KEYS
from optuna_bocr.cli._export import export_to_file
from optuna_bocr.cli._train import train_baseline
from optuna_bocr.keys import STUDY_CONFIG_KEY

_logger = optuna.logging.get_logger(__name__)


def _default_study_name(args: argparse.Namespace) -> str:
    safe = args.model.replace(":", "-")
    name = f"{safe}-{args.dataset}-flops{args.flops_ratio:g}"
    return name if args.sampler == "bocr" else f"{name}-{args.sampler}"


def _study_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": args.model,
        "dataset": args.dataset,
        "flops_target": args.flops_ratio,
        "lbound": args.lbound,
        "rbound": args.rbound,
        "val_size": args.val_size,
        "seed": args.seed,
        "image_size": args.image_size,
    }


def _check_existing_study(study: optuna.study.Study, args: argparse.Namespace) -> None:
    name, url = study.study_name, args.storage
    if study._is_multi_objective() or study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise CLIError(
            f"study {name!r} in {url} is not a single-objective maximisation study; "
            "choose another --study-name"
        )
    stored = study.user_attrs.get(STUDY_CONFIG_KEY)
    if stored is None:
        return
    wanted = _study_config(args)
    diffs = [
        f"{k}={stored.get(k)!r} (now {wanted[k]!r})"
        for k in STUDY_CONFIG_KEYS
        if stored.get(k) != wanted[k]
    ]
    if diffs:
        raise CLIError(
            f"study {name!r} in {url} was made with {', '.join(diffs)}; "
            "use the same settings to resume, or another --study-name"
        )


def _check_param_names(study: optuna.study.Study, names: Sequence[str], url: str) -> None:
    expected = set(names)
    for t in study.get_trials(deepcopy=False):
        if t.params and set(t.params) != expected:
            extra = sorted(set(t.params) - expected)[:3]
            missing = sorted(expected - set(t.params))[:3]
            raise CLIError(
                f"study {study.study_name!r} in {url} searches other parameters than the "
                f"prunable layers of this model (trial {t.number}: unexpected {extra}, "
                f"missing {missing}); choose another --study-name"
            )


def _rollback_settings(args: argparse.Namespace, n_layers: int) -> dict[str, Any]:
    n = args.n_trials
    k = min(args.n_clusters, n_layers)
    if args.rollback_at == "none":
        if args.bridge_clusters not in ("auto", "none"):
            raise CLIError("--bridge-clusters needs rollbacks (--rollback-at is none)")
        return {"n_clusters": k, "bridge_clusters": None, "rollback_at": None}
    if args.bridge_clusters == "auto":
        bridges: list[int] | None = [3 * k] if 3 * k < n_layers else None
    elif args.bridge_clusters == "none":
        bridges = None
    else:
        bridges = list(args.bridge_clusters)
    n_changes = 1 + (len(bridges) if bridges else 0)
    if args.rollback_at == "auto":
        fractions = [0.5 + 0.25 * i / max(1, n_changes - 1) for i in range(n_changes)]
        if n_changes == 2:
            fractions = [0.5, 0.75]
        at: list[int] = []
        for f in fractions:
            at.append(max(round(f * n), (at[-1] + 1) if at else 1))
        patience_from = [max(1, min(a, round(a * 0.8))) for a in at]
        for i in range(1, len(patience_from)):
            patience_from[i] = max(patience_from[i], patience_from[i - 1] + 1)
    else:
        at = list(args.rollback_at)
        if len(at) < n_changes:
            raise CLIError(
                f"--rollback-at needs {n_changes} trial number(s) (one per bridge clustering, "
                f"plus the final rollback), got {len(at)}"
            )
        at = at[:n_changes]
        patience_from = [max(1, round(a * 0.8)) for a in at]
    patience = args.patience if args.patience is not None else max(5, round(0.1 * n))
    return {
        "n_clusters": k,
        "bridge_clusters": bridges,
        "rollback_at": at,
        "patience": patience,
        "patience_from": patience_from,
    }


def _make_sampler(args: argparse.Namespace, objective: Any) -> optuna.samplers.BaseSampler:
    seed = args.seed
    if args.sampler == "bocr":
        from optuna_bocr import BOCRSampler

        settings = _rollback_settings(args, len(objective.search_space))
        try:
            return BOCRSampler(
                objective.search_space,
                features=objective.layer_features(),
                n_startup_trials=args.n_startup_trials,
                seed=seed,
                unstructured_fallback=args.unstructured_fallback,
                **settings,
            )
        except (ValueError, TypeError) as e:
            raise CLIError(f"invalid BOCR settings: {first_line(e)}") from e
    if args.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=args.n_startup_trials)
    if args.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=args.n_startup_trials)
    if args.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _n_finished(study: optuna.study.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _prepare_baseline(
    args: argparse.Namespace, splits: Any, model: Any, device: Any
) -> tuple[str, dict[str, Any]]:
    """Load (or train and cache) the baseline weights; return the checkpoint path used."""
    if args.checkpoint:
        path = Path(args.checkpoint).expanduser()
        if not path.is_file():
            raise CLIError(f"checkpoint not found: {path}")
        return str(path.resolve()), load_weights(model, path)
    path = baseline_path(args.cache_dir, args.model, splits.name, args.seed)
    if path.is_file():
        meta = load_weights(model, path)
        print(f"Using cached baseline {path}", flush=True)
        return str(path.resolve()), meta
    check_writable(path)
    if args.train_epochs <= 0:
        raise CLIError(f"no checkpoint given or cached at {path}, and --train-epochs is 0")
    _check_feasible(args, splits, device)
    meta = train_baseline(
        model,
        splits,
        args=args,
        epochs=args.train_epochs,
        max_images=args.train_images,
        lr=args.train_lr,
        batch_size=args.train_batch_size,
        device=device,
        output=path,
        val_size=args.val_size,
        augment=args.train_augment,
    )
    return str(path.resolve()), meta


def _check_feasible(args: argparse.Namespace, splits: Any, device: Any) -> None:
    """Fail fast on an infeasible budget or an unprunable model, before training a baseline."""
    from optuna_bocr.data import ImageTensorDataset
    from optuna_bocr.pruning import PruningObjective

    val = splits.val
    small = val.subset(range(min(8, len(val)))) if isinstance(val, ImageTensorDataset) else val
    model = build_model(args.model, splits)
    try:
        PruningObjective(
            model,
            calibration=small,
            validation=small,
            flops_ratio=args.flops_ratio,
            lbound=args.lbound,
            rbound=args.rbound,
            device=device,
            n_calibration_images=8,
            points_per_layer=1,
            seed=args.seed,
        )
    except (ValueError, TypeError, RuntimeError) as e:
        raise CLIError(first_line(e)) from e


def _pooled(objectives: list[Any]) -> Callable[[optuna.Trial], float]:
    """One objective per worker thread: each trial borrows a free copy."""
    if len(objectives) == 1:
        return objectives[0]
    free: queue.Queue[Any] = queue.Queue()
    for o in objectives:
        free.put(o)

    def run(trial: optuna.Trial) -> float:
        objective = free.get()
        try:
            return objective(trial)
        finally:
            free.put(objective)

    return run


def cmd_prune(args: argparse.Namespace) -> int:
    """``optuna-bocr prune``."""
    from optuna_bocr.keys import FLOPS_RATIO_KEY
    from optuna_bocr.keys import PARAMS_RATIO_KEY
    from optuna_bocr.keys import STAGE_KEY

    if not args.verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    # 1. Cheap checks first, nothing written yet.
    check_model_name(args.model)
    if args.lbound > args.rbound:
        raise CLIError(f"--lbound {args.lbound} is above --rbound {args.rbound}")
    device = resolve_device(args.device)
    if args.sampler == "bocr":
        from optuna_bocr import BOCRSampler  # noqa: F401 - fail early if unavailable
    study_name = args.study_name or _default_study_name(args)
    storage = open_storage(args.storage)
    existing = load_study_or_none(storage, study_name)
    if existing is not None:
        _check_existing_study(existing, args)
    export_path = None if args.no_export else Path(args.export or f"{study_name}.pt")
    if export_path is not None:
        check_writable(export_path)

    # 2. Data, baseline, objective (may train a baseline; still nothing in the storage).
    splits = load_data(args, args.val_size)
    calibration_images = min(args.calibration_images, len(splits.train))
    model = build_model(args.model, splits, seed=args.seed)
    checkpoint, meta = _prepare_baseline(args, splits, model, device)
    if meta and (meta.get("seed") != args.seed or meta.get("val_size", 0) < args.val_size):
        _logger.warning(
            f"The baseline {checkpoint} was trained with seed={meta.get('seed')} and "
            f"val_size={meta.get('val_size')}: some of the {args.val_size} validation images "
            "may have been seen in training."
        )
    print(
        f"Preparing the pruning objective ({calibration_images} calibration images, "
        f"{len(splits.val)} validation images) ...",
        flush=True,
    )
    objective = make_objective(args, splits, model.to(device), device, calibration_images)
    if existing is not None:
        _check_param_names(existing, list(objective.search_space), args.storage)
    sampler = _make_sampler(args, objective)

    # 3. The study.
    try:
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            sampler=sampler,
            pruner=(
                optuna.pruners.MedianPruner(n_startup_trials=args.n_startup_trials)
                if args.pruner == "median"
                else optuna.pruners.NopPruner()
            ),
            direction="maximize",
            load_if_exists=True,
        )
    except Exception as e:  # noqa: BLE001
        raise CLIError(f"cannot create study {study_name!r}: {first_line(e)}") from e
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["top1"])
    if STUDY_CONFIG_KEY not in study.user_attrs:
        config = _study_config(args)
        study.set_user_attr(STUDY_CONFIG_KEY, config)
        for key in ("model", "dataset", "flops_target"):
            study.set_user_attr(key, config[key])
    study.set_user_attr("checkpoint", checkpoint)
    study.set_user_attr(
        "data_dir", None if args.data_dir is None else str(Path(args.data_dir).resolve())
    )
    study.set_user_attr("calibration_images", calibration_images)
    study.set_user_attr("points_per_layer", args.points_per_layer)
    study.set_user_attr("baseline_top1", float(objective.baseline_top1))
    study.set_user_attr("original_flops", int(objective.original_flops))
    study.set_user_attr("original_params", int(objective.original_params))
    study.set_user_attr("n_prunable_layers", len(objective.search_space))

    done = _n_finished(study)
    remaining = max(0, args.n_trials - done)
    print(
        f"Study {study_name!r} in {args.storage}: {done} finished trial(s), running "
        f"{remaining} more with the {args.sampler} sampler "
        f"({len(objective.search_space)} prunable layers, FLOPs target {args.flops_ratio:g}, "
        f"baseline {objective.baseline_top1:.2f}% top-1).",
        flush=True,
    )
    if remaining:
        objectives = [objective] + [copy.deepcopy(objective) for _ in range(args.workers - 1)]
        try:
            study.optimize(
                _pooled(objectives),
                n_trials=remaining,
                timeout=args.timeout,
                n_jobs=args.workers,
                callbacks=[
                    optuna.study.MaxTrialsCallback(
                        args.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED)
                    )
                ],
                show_progress_bar=not args.quiet,
            )
        except KeyboardInterrupt:
            print(
                f"\nInterrupted: re-run the same command to resume study {study_name!r}.",
                file=sys.stderr,
            )
            return 130

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise CLIError(f"study {study_name!r} has no completed trial")
    best = study.best_trial
    flops_ratio = float(best.user_attrs.get(FLOPS_RATIO_KEY, float("nan")))
    params_ratio = float(best.user_attrs.get(PARAMS_RATIO_KEY, float("nan")))
    exported = None
    if export_path is not None:
        exported = export_to_file(objective, best, export_path, study)
    rows = [
        ("Study", f"{study_name} ({len(complete)} completed trials, {args.sampler} sampler)"),
        (
            "Baseline top-1",
            f"{objective.baseline_top1:.2f}% (validation, {len(splits.val)} images)",
        ),
        (
            "Best top-1",
            f"{best.value:.2f}% (trial {best.number}"
            + (
                f", BOCR stage {best.user_attrs[STAGE_KEY]}"
                if STAGE_KEY in best.user_attrs
                else ""
            )
            + ", no fine-tuning)",
        ),
        (
            "FLOPs",
            f"{fmt_count(objective.original_flops)} -> "
            f"{fmt_count(objective.original_flops * flops_ratio)} ({flops_ratio:.3f}, "
            f"target {args.flops_ratio:g})",
        ),
        (
            "Params",
            f"{fmt_count(objective.original_params)} -> "
            f"{fmt_count(objective.original_params * params_ratio)} ({params_ratio:.3f})",
        ),
        ("Storage", args.storage),
        ("Dashboard", f"optuna-dashboard {args.storage}"),
    ]
    if exported is not None:
        rows.append(
            (
                "Exported",
                f"{exported}  (fine-tune: optuna-bocr export --storage "
                f"{args.storage} --study-name {study_name} --finetune-epochs 1)",
            )
        )
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0
