"""Pick a study and trial, save a trial's pruned model (for ``export``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from optuna_bocr.cli._common import CLIError
from optuna_bocr.cli._common import first_line
from optuna_bocr.cli._common import fmt_count
from optuna_bocr.cli._common import load_study_or_none
from optuna_bocr.cli._common import STUDY_CONFIG_KEYS
from optuna_bocr.keys import STUDY_CONFIG_KEY


def export_to_file(
    objective: Any,
    trial: FrozenTrial,
    path: Path,
    study: optuna.study.Study,
) -> Path:
    """Save the pruned model of ``trial`` to ``path`` with the study's metadata."""
    from optuna_bocr.keys import ACTUAL_PARAMS_KEY
    from optuna_bocr.pruning import count_flops
    from optuna_bocr.pruning import save_pruned

    try:
        pruned = objective.export(trial)
    except (ValueError, TypeError, RuntimeError) as e:
        raise CLIError(f"cannot export trial {trial.number}: {first_line(e)}") from e
    input_size = tuple(int(s) for s in objective.input_size)
    config = study.user_attrs.get(STUDY_CONFIG_KEY, {})
    metadata = {
        "study_name": study.study_name,
        "trial_number": trial.number,
        "top1_val": trial.value,
        "ratios": dict(trial.user_attrs.get(ACTUAL_PARAMS_KEY, trial.params)),
        "input_size": list(input_size),
        "flops": int(count_flops(pruned, (1, *input_size))),
        "original_flops": int(objective.original_flops),
        "params": int(sum(p.numel() for p in pruned.parameters())),
        "original_params": int(objective.original_params),
        **{k: config.get(k) for k in STUDY_CONFIG_KEYS},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_pruned(pruned.cpu(), path, metadata=metadata)
    return path


def pick_study(
    storage: optuna.storages.BaseStorage | None, name: str | None, url: str
) -> optuna.study.Study:
    """The study ``name`` of ``storage`` (the only one when ``name`` is ``None``)."""
    if storage is None:
        raise CLIError(f"{url} holds 0 studies (no such file); run `optuna-bocr prune` first")
    if name is None:
        names = [
            s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
        ]
        if len(names) != 1:
            raise CLIError(
                f"{url} holds {len(names)} studies; pick one with --study-name"
                + (
                    f" ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
                    if names
                    else ""
                )
            )
        name = names[0]
    study = load_study_or_none(storage, name)
    if study is None:
        raise CLIError(f"no study {name!r} in {url}")
    return study


def pick_trial(study: optuna.study.Study, number: int | None) -> FrozenTrial:
    """The COMPLETE trial ``number`` of ``study`` (the best when ``number`` is ``None``)."""
    trials = study.get_trials(deepcopy=False)
    if number is None:
        if not any(t.state == TrialState.COMPLETE for t in trials):
            raise CLIError(f"study {study.study_name!r} has no completed trial")
        return study.best_trial
    for t in trials:
        if t.number == number:
            if t.state != TrialState.COMPLETE:
                raise CLIError(
                    f"trial {number} of {study.study_name!r} is {t.state.name}, not COMPLETE"
                )
            return t
    raise CLIError(f"study {study.study_name!r} has no trial {number}")


def upload_artifacts(
    artifact_store: str | None, study: optuna.study.Study, path: Path, plot: Path | None
) -> list[str]:
    """Upload the model file (and plot) to the artifact store, attached to the study."""
    if not artifact_store:
        return []
    from optuna.artifacts import FileSystemArtifactStore
    from optuna.artifacts import upload_artifact

    # Finished trials are read-only in Optuna 5, so the files are attached to the study;
    # their names carry the trial number.
    store_dir = Path(artifact_store)
    store_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(store_dir))
    ids = []
    for file, mimetype in ((path, "application/octet-stream"), (plot, "image/png")):
        if file is not None:
            ids.append(
                upload_artifact(
                    artifact_store=store,
                    file_path=str(file),
                    study_or_trial=study,
                    mimetype=mimetype,
                )
            )
    return ids


def print_report(
    s: Any,
    study: optuna.study.Study,
    trial: Any,
    metadata: dict[str, Any],
    m: dict[str, Any],
    device: Any,
    path: Path,
    plot: Path | None,
    artifact_ids: list[str],
) -> None:
    """Print the summary table of ``export`` (``s``: its settings)."""
    (top1_before, top5_before) = m["before"]
    rows = [
        ("Trial", f"{trial.number} of {study.study_name} ({trial.value:.2f}% val top-1)"),
        ("Original", f"{m['top1_orig']:.2f}% test top-1"),
        ("Pruned", f"{top1_before:.2f}% test top-1, {top5_before:.2f}% top-5 (no fine-tuning)"),
    ]
    if m["after"] is not None:
        top1_after, top5_after = m["after"]
        rows.append(
            (
                "Fine-tuned",
                f"{top1_after:.2f}% test top-1, {top5_after:.2f}% top-5 "
                f"({s.finetune_epochs:g} epoch(s))",
            )
        )
    flops, params = metadata["flops"], metadata["params"]
    rows += [
        (
            "FLOPs",
            f"{fmt_count(metadata['original_flops'])} -> {fmt_count(flops)} "
            f"({flops / metadata['original_flops']:.3f})",
        ),
        (
            "Params",
            f"{fmt_count(metadata['original_params'])} -> {fmt_count(params)} "
            f"({params / metadata['original_params']:.3f})",
        ),
        (
            "Latency",
            f"{m['lat_orig'] * 1e3:.2f} ms -> {m['lat_pruned'] * 1e3:.2f} ms per batch of "
            f"{s.latency_batch} on {device} (x{m['lat_orig'] / m['lat_pruned']:.2f})",
        ),
        ("Test images", str(m["n_test"])),
        ("Saved", f"{path}  (load with optuna_bocr.pruning.load_pruned)"),
    ]
    if plot is not None:
        rows.append(("Plot", f"{plot}, {plot.with_name(plot.stem + '-history' + plot.suffix)}"))
    if artifact_ids:
        rows.append(
            (
                "Artifacts",
                f"{', '.join(artifact_ids)} on study {study.study_name} (see them with "
                f"optuna-dashboard {s.storage} --artifact-dir {s.artifact_store})",
            )
        )
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
