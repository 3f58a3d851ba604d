"""``optuna-bocr export``: export, test, fine-tune and time a trial's pruned model."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from optuna_bocr.cli._common import build_model
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
from optuna_bocr.keys import STUDY_CONFIG_KEY


def export_to_file(
    objective: Any,
    trial: FrozenTrial,
    path: Path,
    study: optuna.study.Study,
) -> Path:
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


def _pick_study(
    storage: optuna.storages.BaseStorage, name: str | None, url: str
) -> optuna.study.Study:
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


def _pick_trial(study: optuna.study.Study, number: int | None) -> FrozenTrial:
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


def _plot_ratios(objective: Any, trial: FrozenTrial, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from optuna_bocr.keys import ACTUAL_PARAMS_KEY

    names = list(objective.search_space)
    ratios = objective.clip(trial.user_attrs.get(ACTUAL_PARAMS_KEY, trial.params))
    kept = objective.kept_channels(ratios)
    vectors = objective.layer_features().vectors
    original = [int(vectors[n][0]) for n in names]
    kept_n = [int(len(kept[n])) for n in names]
    x = list(range(len(names)))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(names) + 2), 4.2))
    ax.bar(x, original, color="#d0d0d0", label="original channels")
    ax.bar(x, kept_n, color="#1f77b4", label="kept channels")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_ylabel("input channels")
    ax.set_title(title, fontsize=10)
    ax2 = ax.twinx()
    ax2.plot(x, [ratios[n] for n in names], "o-", color="#d62728", label="preserve ratio")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("preserve ratio")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_export(args: argparse.Namespace) -> int:
    """``optuna-bocr export``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from torch.utils.data import Subset

    from optuna_bocr.training import evaluate
    from optuna_bocr.training import measure_latency
    from optuna_bocr.training import train

    device = resolve_device(args.device)
    storage = open_storage(args.storage)
    study = _pick_study(storage, args.study_name, args.storage)
    config = study.user_attrs.get(STUDY_CONFIG_KEY)
    if not isinstance(config, dict):
        raise CLIError(f"study {study.study_name!r} was not made by `optuna-bocr prune`")
    trial = _pick_trial(study, args.trial)
    output = Path(args.output or f"{study.study_name}-trial{trial.number}.pt")
    check_writable(output)
    plot = Path(args.plot) if args.plot else None
    if plot is not None:
        check_writable(plot)

    # Rebuild the objective of the study, exactly as `prune` built it.
    ns = argparse.Namespace(
        model=config["model"],
        dataset=config["dataset"],
        data_dir=args.data_dir or study.user_attrs.get("data_dir"),
        download=args.download,
        val_size=config["val_size"],
        seed=config["seed"],
        image_size=config["image_size"],
        flops_ratio=config["flops_target"],
        lbound=config["lbound"],
        rbound=config["rbound"],
        points_per_layer=int(study.user_attrs.get("points_per_layer", 10)),
        quiet=args.quiet,
    )
    checkpoint = args.checkpoint or study.user_attrs.get("checkpoint")
    if not checkpoint:
        raise CLIError("the study records no checkpoint; pass --checkpoint PATH")
    splits = load_data(ns, ns.val_size)
    model = build_model(ns.model, splits)
    load_weights(model, checkpoint)
    original = copy.deepcopy(model)
    calibration_images = int(study.user_attrs.get("calibration_images", 3000))
    print(f"Rebuilding the pruning objective of study {study.study_name!r} ...", flush=True)
    objective = make_objective(ns, splits, model.to(device), device, calibration_images)
    names = set(objective.search_space)
    if set(trial.params) != names:
        raise CLIError(
            f"trial {trial.number} does not match the prunable layers of {ns.model}; "
            "wrong --checkpoint?"
        )
    path = export_to_file(objective, trial, output, study)
    from optuna_bocr.pruning import load_pruned

    pruned, metadata = load_pruned(path)
    if plot is not None:
        _plot_ratios(
            objective,
            trial,
            plot,
            f"{study.study_name}, trial {trial.number}: "
            f"{metadata['flops'] / metadata['original_flops']:.2f} FLOPs, "
            f"{trial.value:.2f}% val top-1",
        )

    test_set = splits.test
    if args.test_size is not None and args.test_size < len(test_set):
        test_set = Subset(test_set, range(args.test_size))
    top1_orig, _ = evaluate(original, test_set, device=device)
    top1_before, top5_before = evaluate(pruned, test_set, device=device)
    top1_after = top5_after = None
    if args.finetune_epochs > 0:
        print(f"Fine-tuning for {args.finetune_epochs:g} epoch(s) ...", flush=True)
        train(
            pruned,
            splits.train,
            epochs=args.finetune_epochs,
            batch_size=args.batch_size,
            lr=args.finetune_lr,
            device=device,
            seed=ns.seed,
            max_images=args.finetune_images,
            augment=False,
            freeze_bn=args.finetune_bn == "frozen",
            progress=not args.quiet,
        )
        top1_after, top5_after = evaluate(pruned, test_set, device=device)
        metadata.update(
            finetune_epochs=args.finetune_epochs,
            test_top1=top1_after,
            test_top1_before_finetune=top1_before,
        )
    else:
        metadata.update(test_top1=top1_before)
    from optuna_bocr.pruning import save_pruned

    save_pruned(pruned.cpu().eval(), path, metadata=metadata)

    shape = (args.latency_batch, splits.in_channels, splits.image_size, splits.image_size)
    lat_orig = measure_latency(original, shape, device=device)
    lat_pruned = measure_latency(pruned, shape, device=device)

    artifact_ids: list[str] = []
    if args.artifact_store:
        from optuna.artifacts import FileSystemArtifactStore
        from optuna.artifacts import upload_artifact

        # Finished trials are read-only in Optuna 5, so the files are attached to the study;
        # their names carry the trial number.
        store_dir = Path(args.artifact_store)
        store_dir.mkdir(parents=True, exist_ok=True)
        store = FileSystemArtifactStore(str(store_dir))
        for file, mimetype in ((path, "application/octet-stream"), (plot, "image/png")):
            if file is not None:
                artifact_ids.append(
                    upload_artifact(
                        artifact_store=store,
                        file_path=str(file),
                        study_or_trial=study,
                        mimetype=mimetype,
                    )
                )

    n_test = len(test_set)
    rows = [
        ("Trial", f"{trial.number} of {study.study_name} ({trial.value:.2f}% val top-1)"),
        ("Original", f"{top1_orig:.2f}% test top-1"),
        ("Pruned", f"{top1_before:.2f}% test top-1, {top5_before:.2f}% top-5 (no fine-tuning)"),
    ]
    if top1_after is not None:
        rows.append(
            (
                "Fine-tuned",
                f"{top1_after:.2f}% test top-1, {top5_after:.2f}% top-5 "
                f"({args.finetune_epochs:g} epoch(s))",
            )
        )
    rows += [
        (
            "FLOPs",
            f"{fmt_count(metadata['original_flops'])} -> {fmt_count(metadata['flops'])} "
            f"({metadata['flops'] / metadata['original_flops']:.3f})",
        ),
        (
            "Params",
            f"{fmt_count(metadata['original_params'])} -> {fmt_count(metadata['params'])} "
            f"({metadata['params'] / metadata['original_params']:.3f})",
        ),
        (
            "Latency",
            f"{lat_orig * 1e3:.2f} ms -> {lat_pruned * 1e3:.2f} ms per batch of "
            f"{args.latency_batch} on {device} (x{lat_orig / lat_pruned:.2f})",
        ),
        ("Test images", str(n_test)),
        ("Saved", f"{path}  (load with optuna_bocr.pruning.load_pruned)"),
    ]
    if plot is not None:
        rows.append(("Plot", str(plot)))
    if artifact_ids:
        rows.append(
            (
                "Artifacts",
                f"{', '.join(artifact_ids)} on study {study.study_name} (see them with "
                f"optuna-dashboard {args.storage} --artifact-dir {args.artifact_store})",
            )
        )
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0
