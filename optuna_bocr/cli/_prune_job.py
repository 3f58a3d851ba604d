"""The ``prune`` job: data -> baseline -> objective -> sampler -> study -> trials -> export.

It reads a :class:`~optuna_bocr.cli._prune.PruneSettings` that passed its up-front checks;
what can only be checked with the data, the model or the stored study is checked on the
way, still before the storage gets its first write (a new SQLite or journal file is only
created once the sampler exists).
"""

from __future__ import annotations

from collections.abc import Callable
import copy
from pathlib import Path
import queue
import sys
from typing import Any
import warnings

import optuna

from optuna_bocr.cli._common import baseline_path
from optuna_bocr.cli._common import build_model
from optuna_bocr.cli._common import check_writable
from optuna_bocr.cli._common import CLIError
from optuna_bocr.cli._common import first_line
from optuna_bocr.cli._common import fmt_count
from optuna_bocr.cli._common import load_data
from optuna_bocr.cli._common import load_study_or_none
from optuna_bocr.cli._common import load_weights
from optuna_bocr.cli._common import make_objective
from optuna_bocr.cli._common import resolve_device
from optuna_bocr.cli._export import export_to_file
from optuna_bocr.cli._prune import PruneSettings
from optuna_bocr.cli._search import check_existing_study
from optuna_bocr.cli._search import check_param_names
from optuna_bocr.cli._search import check_sampler_fits
from optuna_bocr.cli._search import make_pruner
from optuna_bocr.cli._search import make_sampler
from optuna_bocr.cli._search import study_config
from optuna_bocr.cli._storage import open_storage
from optuna_bocr.cli._storage import StorageLock
from optuna_bocr.cli._train import train_baseline
from optuna_bocr.cli._worker import catch_ctrl_c
from optuna_bocr.cli._worker import n_finished
from optuna_bocr.cli._worker import TrialRunner
from optuna_bocr.keys import FLOPS_RATIO_KEY
from optuna_bocr.keys import PARAMS_RATIO_KEY
from optuna_bocr.keys import STAGE_KEY
from optuna_bocr.keys import STUDY_CONFIG_KEY

_logger = optuna.logging.get_logger(__name__)


def run_prune(s: PruneSettings) -> int:
    """Run the ``prune`` job; return the exit status."""
    if not s.verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = resolve_device(s.data.device)
    storage = open_storage(s.storage, heartbeat=s.heartbeat, create=False)
    existing = None if storage is None else load_study_or_none(storage, s.study_name)
    if existing is not None:
        check_existing_study(existing, s)

    splits = load_data(s.data, s.val_size)
    model = build_model(s.data.model, splits, seed=s.data.seed, kwargs=s.data.model_kwargs)
    checkpoint = prepare_baseline(s, splits, model, device)
    objective = prepare_objective(s, splits, model, device)
    if existing is not None:
        check_param_names(existing, list(objective.search_space), s.storage)
    sampler = make_sampler(s, objective)
    if existing is not None:
        check_sampler_fits(sampler, existing, s)

    if storage is None:  # A new file: created only now that every check passed.
        storage = open_storage(s.storage, heartbeat=s.heartbeat)
    assert storage is not None
    study = create_study(s, storage, sampler, objective, checkpoint, splits)
    if not run_trials(s, study, storage, objective):
        return 130
    status = report(s, study, objective, splits)
    _publish(s, study, sampler, objective)
    return status


def _publish(s: PruneSettings, study: optuna.study.Study, sampler: Any, objective: Any) -> None:
    """Plots, artifacts and the dashboard note of the finished study."""
    from optuna_bocr.cli._publish import publish_prune_results
    from optuna_bocr.cli._search import rollback_settings

    schedule = None
    if s.sampler == "bocr":
        schedule = rollback_settings(s, len(objective.search_space))
    rows = publish_prune_results(
        study, sampler, objective, export_path=s.export, artifact_store=s.artifact_store,
        schedule=schedule,
    )  # fmt: skip
    for key, value in rows:
        print(f"{key:<14}  {value}")


def prepare_baseline(s: PruneSettings, splits: Any, model: Any, device: Any) -> str:
    """Load (or train and cache) the baseline weights into ``model``; return their path."""
    if s.checkpoint:
        path = Path(s.checkpoint).expanduser()
        if not path.is_file():
            raise CLIError(f"checkpoint not found: {path}")
        meta = load_weights(model, path)
    else:
        path = baseline_path(
            s.data.cache_dir, s.data.model, splits.name, s.data.seed, s.data.model_kwargs
        )
        if path.is_file():
            meta = load_weights(model, path)
            print(f"Using cached baseline {path}", flush=True)
        else:
            check_writable(path, "baseline checkpoint")
            if s.train.epochs <= 0:
                raise CLIError(f"no checkpoint given or cached at {path}, and --train-epochs is 0")
            check_feasible(s, splits, device)
            meta = train_baseline(
                model, splits, data=s.data, train=s.train, device=device, output=path,
                val_size=s.val_size,
            )  # fmt: skip
    if meta and (meta.get("seed") != s.data.seed or meta.get("val_size", 0) < s.val_size):
        _logger.warning(
            f"The baseline {path} was trained with seed={meta.get('seed')} and "
            f"val_size={meta.get('val_size')}: some of the {s.val_size} validation images "
            "may have been seen in training."
        )
    return str(path.resolve())


def check_feasible(s: PruneSettings, splits: Any, device: Any) -> None:
    """Fail fast on an infeasible budget or an unprunable model, before training a baseline."""
    from optuna_bocr.data import ImageTensorDataset
    from optuna_bocr.pruning import PruningObjective

    val = splits.val
    small = val.subset(range(min(8, len(val)))) if isinstance(val, ImageTensorDataset) else val
    try:
        PruningObjective(
            build_model(s.data.model, splits, kwargs=s.data.model_kwargs),
            calibration=small, validation=small,
            flops_ratio=s.flops_ratio, budget_rule=s.budget_rule,  # type: ignore[arg-type]
            lbound=s.lbound, rbound=s.rbound, device=device,
            n_calibration_images=8, points_per_layer=1, seed=s.data.seed,
        )  # fmt: skip
    except (ValueError, TypeError, RuntimeError) as e:
        raise CLIError(first_line(e)) from e


def prepare_objective(s: PruneSettings, splits: Any, model: Any, device: Any) -> Any:
    """The pruning objective of the baseline ``model``."""
    calibration_images = min(s.calibration_images, len(splits.train))
    print(
        f"Preparing the pruning objective ({calibration_images} calibration images, "
        f"{len(splits.val)} validation images) ...",
        flush=True,
    )
    return make_objective(
        splits, model.to(device), device, flops_ratio=s.flops_ratio,
        budget_rule=s.budget_rule, lbound=s.lbound,
        rbound=s.rbound, calibration_images=calibration_images,
        points_per_layer=s.points_per_layer, seed=s.data.seed,
    )  # fmt: skip


def create_study(
    s: PruneSettings,
    storage: optuna.storages.BaseStorage,
    sampler: optuna.samplers.BaseSampler,
    objective: Any,
    checkpoint: str,
    splits: Any,
) -> optuna.study.Study:
    """Create (or load) the study and record what ``export`` and a resume need."""
    try:
        with StorageLock(s.storage, f"optuna-bocr-study:{s.study_name}"):
            study = optuna.create_study(
                study_name=s.study_name,
                storage=storage,
                sampler=sampler,
                pruner=make_pruner(s),
                direction="maximize",
                load_if_exists=True,
            )
    except Exception as e:  # noqa: BLE001
        raise CLIError(f"cannot create study {s.study_name!r}: {first_line(e)}") from e
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["top1"])
    if STUDY_CONFIG_KEY not in study.user_attrs:
        config = study_config(s)
        study.set_user_attr(STUDY_CONFIG_KEY, config)
        for key in ("model", "dataset", "flops_target"):
            study.set_user_attr(key, config[key])
    calibration_images = min(s.calibration_images, len(splits.train))
    attrs = {
        "checkpoint": checkpoint,
        "data_dir": None if s.data.data_dir is None else str(Path(s.data.data_dir).resolve()),
        "calibration_images": calibration_images,
        "points_per_layer": s.points_per_layer,
        "baseline_top1": float(objective.baseline_top1),
        "original_flops": int(objective.original_flops),
        "original_params": int(objective.original_params),
        "n_prunable_layers": len(objective.search_space),
    }
    for key, value in attrs.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    return study


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


def run_trials(
    s: PruneSettings,
    study: optuna.study.Study,
    storage: optuna.storages.BaseStorage,
    objective: Any,
) -> bool:
    """Run trials until the study has ``--n-trials`` finished ones; ``False`` if interrupted."""
    done = n_finished(study)
    remaining = max(0, s.n_trials - done)
    print(
        f"Study {s.study_name!r} in {s.storage}: {done} finished trial(s), running "
        f"{remaining} more with the {s.sampler} sampler "
        f"({len(objective.search_space)} prunable layers, FLOPs target {s.flops_ratio:g}, "
        f"baseline {objective.baseline_top1:.2f}% top-1).",
        flush=True,
    )
    if not remaining:
        return True
    from tqdm.auto import tqdm

    objectives = [objective] + [copy.deepcopy(objective) for _ in range(s.workers - 1)]
    bar = tqdm(total=s.n_trials, initial=done, disable=s.data.quiet, unit="trial")

    def progress() -> None:
        bar.n = n_finished(study)
        bar.refresh()

    runner = TrialRunner(
        study,
        _pooled(objectives),
        n_trials=s.n_trials,
        lock=StorageLock(s.storage, f"optuna-bocr-study:{s.study_name}"),
        storage=storage,
        timeout=s.timeout,
        on_finish=progress,
    )
    try:
        with catch_ctrl_c(runner):
            runner.run_threads(s.workers)
    except KeyboardInterrupt:
        bar.close()
        print(
            f"\nInterrupted: re-run the same command to resume study {s.study_name!r}.",
            file=sys.stderr,
        )
        return False
    bar.close()
    return True


def report(s: PruneSettings, study: optuna.study.Study, objective: Any, splits: Any) -> int:
    """Export the best trial and print the summary table."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise CLIError(f"study {s.study_name!r} has no completed trial")
    best = study.best_trial
    flops_ratio = float(best.user_attrs.get(FLOPS_RATIO_KEY, float("nan")))
    params_ratio = float(best.user_attrs.get(PARAMS_RATIO_KEY, float("nan")))
    exported = None
    if s.export is not None:
        exported = export_to_file(objective, best, s.export, study)
    stage = f", BOCR stage {best.user_attrs[STAGE_KEY]}" if STAGE_KEY in best.user_attrs else ""
    rows = [
        ("Study", f"{s.study_name} ({len(complete)} completed trials, {s.sampler} sampler)"),
        (
            "Baseline top-1",
            f"{objective.baseline_top1:.2f}% (validation, {len(splits.val)} images)",
        ),
        ("Best top-1", f"{best.value:.2f}% (trial {best.number}{stage}, no fine-tuning)"),
        (
            "FLOPs",
            f"{fmt_count(objective.original_flops)} -> "
            f"{fmt_count(objective.original_flops * flops_ratio)} ({flops_ratio:.3f}, "
            f"target {s.flops_ratio:g})",
        ),
        (
            "Params",
            f"{fmt_count(objective.original_params)} -> "
            f"{fmt_count(objective.original_params * params_ratio)} ({params_ratio:.3f})",
        ),
        ("Storage", s.storage),
        ("Dashboard", f"optuna-dashboard {s.storage}"),
    ]
    if exported is not None:
        rows.append(
            (
                "Exported",
                f"{exported}  (fine-tune: optuna-bocr export --storage "
                f"{s.storage} --study-name {s.study_name} --finetune-epochs 1)",
            )
        )
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0
