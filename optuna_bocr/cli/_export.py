"""``optuna-bocr export``: export, test, fine-tune and time a trial's pruned model."""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass
from dataclasses import fields
from pathlib import Path
from typing import Any

import optuna

from optuna_bocr.cli._base import Command
from optuna_bocr.cli._base import nonneg_float
from optuna_bocr.cli._base import positive_int
from optuna_bocr.cli._common import build_model
from optuna_bocr.cli._common import check_model_name
from optuna_bocr.cli._common import check_writable
from optuna_bocr.cli._common import CLIError
from optuna_bocr.cli._common import DEFAULT_STORAGE
from optuna_bocr.cli._common import load_data
from optuna_bocr.cli._common import load_weights
from optuna_bocr.cli._common import make_objective
from optuna_bocr.cli._common import require_module
from optuna_bocr.cli._common import resolve_device
from optuna_bocr.cli._common import STUDY_CONFIG_LEGACY
from optuna_bocr.cli._export_io import export_to_file
from optuna_bocr.cli._export_io import pick_study
from optuna_bocr.cli._export_io import pick_trial
from optuna_bocr.cli._export_io import print_report
from optuna_bocr.cli._export_io import upload_artifacts
from optuna_bocr.cli._export_top_k import choose_fine_tuned
from optuna_bocr.cli._export_top_k import choose_rescored
from optuna_bocr.cli._export_top_k import fresh_image_count
from optuna_bocr.cli._plots import write_trial_plots
from optuna_bocr.cli._settings import DataSettings
from optuna_bocr.cli._storage import check_storage
from optuna_bocr.cli._storage import open_storage
from optuna_bocr.keys import STUDY_CONFIG_KEY


@dataclass(frozen=True)
class ExportSettings:
    """Everything ``optuna-bocr export`` was asked to do, parsed once and checked up front."""

    storage: str
    study_name: str | None
    trial: int | None
    output: str | None
    checkpoint: str | None
    data_dir: str | None
    download: bool
    device: str
    finetune_epochs: float
    finetune_images: int | None
    finetune_lr: float
    finetune_bn: str
    top_k: int
    rescore_images: int | None
    batch_size: int
    test_size: int | None
    latency_batch: int
    plot: str | None
    artifact_store: str | None
    quiet: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExportSettings:
        """The settings of the parsed ``export`` arguments."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def check(self) -> None:
        """Refuse what can be refused before the storage is opened or any work is done."""
        resolve_device(self.device)
        if self.rescore_images is not None and (self.top_k < 2 or self.finetune_epochs > 0):
            raise CLIError("--rescore-images is for --top-k K (K >= 2) without --finetune-epochs")
        if self.top_k > 1 and self.trial is not None:
            raise CLIError("--top-k chooses the trial itself: drop --trial")
        check_storage(self.storage)
        if self.output is not None:
            check_writable(Path(self.output), "--output file")
        if self.plot is not None:
            require_module("matplotlib", "plot", "--plot")
            check_writable(Path(self.plot), "--plot file")
        if self.artifact_store is not None:
            store = Path(self.artifact_store).expanduser()
            if store.exists() and not store.is_dir():
                raise CLIError(f"--artifact-store {store} is not a directory")
            check_writable(store / "artifact", "--artifact-store folder")


class ExportCommand(Command):
    """``optuna-bocr export``."""

    name = "export"
    help = "build the pruned model of a trial, fine-tune it, measure it"
    description = (
        "Rebuild the pruned network of a trial of a `prune` study (the best by default) as a "
        "physically smaller model file; optionally fine-tune it; report test accuracy "
        "before/after fine-tuning and the latency of the original and pruned models."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        p = parser
        p.add_argument(
            "--storage", default=DEFAULT_STORAGE, metavar="URL", help="(default: %(default)s)"
        )
        p.add_argument(
            "--study-name",
            default=None,
            metavar="NAME",
            help="study (default: the only study in the storage)",
        )
        p.add_argument(
            "--trial",
            type=int,
            default=None,
            metavar="NUMBER",
            help="trial number (default: best)",
        )
        p.add_argument(
            "--output",
            default=None,
            metavar="PATH",
            help="model file (default: <study-name>-trial<N>.pt)",
        )
        p.add_argument(
            "--checkpoint",
            default=None,
            metavar="PATH",
            help="baseline weights (default: the one recorded by `prune`)",
        )
        p.add_argument(
            "--data-dir",
            default=None,
            metavar="DIR",
            help="(default: the one recorded by `prune`)",
        )
        p.add_argument("--download", action="store_true", help="download the dataset if missing")
        p.add_argument("--device", default="auto", help="(default: %(default)s)")
        p.add_argument(
            "--finetune-epochs",
            type=nonneg_float,
            default=0.0,
            metavar="E",
            help="fine-tuning epochs after export (SGD, cosine) (default: %(default)s)",
        )
        p.add_argument(
            "--finetune-images",
            type=positive_int,
            default=None,
            metavar="N",
            help="training images per fine-tuning epoch (default: all)",
        )
        p.add_argument(
            "--finetune-lr", type=nonneg_float, default=0.01, metavar="LR", help="(default: 0.01)"
        )
        p.add_argument(
            "--top-k",
            type=positive_int,
            default=1,
            metavar="K",
            help="choose among the K best distinct trials: with --finetune-epochs, fine-tune "
            "each the same way and ship the best on the validation split (study user attr "
            "optuna_bocr:finetuned); without, score each on validation images the search did "
            "not score and ship the best on those (optuna_bocr:rescored) (default: "
            "%(default)s)",
        )
        p.add_argument(
            "--rescore-images",
            type=positive_int,
            default=None,
            metavar="N",
            help="--top-k without fine-tuning: re-score on the N validation images after the "
            "search's, which the baseline must never have seen (default: all that the "
            "checkpoint records as held out by `optuna-bocr train` beyond the search's)",
        )
        p.add_argument(
            "--finetune-bn",
            default="frozen",
            choices=("frozen", "train"),
            help="batch norm during fine-tuning: frozen running statistics (best for short "
            "fine-tuning) or updated as in normal training (default: %(default)s)",
        )
        p.add_argument(
            "--batch-size", type=positive_int, default=128, metavar="B", help="(default: 128)"
        )
        p.add_argument(
            "--test-size",
            type=positive_int,
            default=None,
            metavar="N",
            help="evaluate on the first N test images only (default: the whole test set)",
        )
        p.add_argument(
            "--latency-batch",
            type=positive_int,
            default=64,
            metavar="B",
            help="batch size of the latency measurement (default: %(default)s)",
        )
        p.add_argument(
            "--plot",
            default=None,
            metavar="PNG",
            help="write a bar chart of kept vs original channels per layer (needs "
            "optuna-bocr[plot])",
        )
        p.add_argument(
            "--artifact-store",
            default=None,
            metavar="DIR",
            help="also upload the model file to this Optuna FileSystemArtifactStore (view it "
            "with `optuna-dashboard <storage> --artifact-dir DIR`)",
        )
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    def take_action(self, args: argparse.Namespace) -> int:
        settings = ExportSettings.from_args(args)
        settings.check()
        return run_export(settings)


def _data_settings(s: ExportSettings, study: optuna.study.Study) -> DataSettings:
    """The data settings ``prune`` used for ``study``."""
    config = study.user_attrs[STUDY_CONFIG_KEY]
    return DataSettings(
        model=config["model"],
        model_kwargs=config.get("model_kwargs"),
        dataset=config["dataset"],
        data_dir=s.data_dir or study.user_attrs.get("data_dir"),
        download=s.download,
        image_size=config["image_size"],
        seed=config["seed"],
        device=s.device,
        cache_dir=None,
        quiet=s.quiet,
    )


def _check_model_still_there(study: optuna.study.Study, config: dict[str, Any]) -> None:
    """Refuse a study whose network (the user's own factory) cannot be imported any more."""
    from optuna_bocr.models import is_factory_spec

    if is_factory_spec(config["model"]):
        try:
            check_model_name(config["model"], config.get("model_kwargs"))
        except CLIError as e:
            raise CLIError(
                f"study {study.study_name!r} was made with --model {config['model']}, which "
                f"cannot be imported any more: {e}"
            ) from e


def run_export(s: ExportSettings) -> int:
    """Export the trial: study -> objective -> pruned file -> test, fine-tune, latency."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = resolve_device(s.device)
    study = pick_study(open_storage(s.storage, create=False), s.study_name, s.storage)
    config = study.user_attrs.get(STUDY_CONFIG_KEY)
    if not isinstance(config, dict):
        raise CLIError(f"study {study.study_name!r} was not made by `optuna-bocr prune`")
    trial = pick_trial(study, s.trial)
    output = Path(s.output or f"{study.study_name}-trial{trial.number}.pt")
    check_writable(output, "--output file")
    plot = Path(s.plot) if s.plot else None
    checkpoint = s.checkpoint or study.user_attrs.get("checkpoint")
    if not checkpoint:
        raise CLIError("the study records no checkpoint; pass --checkpoint PATH")
    _check_model_still_there(study, config)

    # Rebuild the objective of the study, exactly as `prune` built it.
    data = _data_settings(s, study)
    splits = load_data(data, config["val_size"])
    model = build_model(data.model, splits, kwargs=data.model_kwargs)
    meta = load_weights(model, checkpoint)
    rescoring = s.top_k > 1 and s.finetune_epochs <= 0
    n_fresh = (
        fresh_image_count(s, meta, config["val_size"], data.seed, str(checkpoint))
        if rescoring
        else 0
    )
    original = copy.deepcopy(model)
    print(f"Rebuilding the pruning objective of study {study.study_name!r} ...", flush=True)
    objective = make_objective(
        splits, model.to(device), device, flops_ratio=config["flops_target"],
        budget_rule=config.get("budget_rule", STUDY_CONFIG_LEGACY["budget_rule"]),
        lbound=config["lbound"], rbound=config["rbound"],
        calibration_images=int(study.user_attrs.get("calibration_images", 3000)),
        points_per_layer=int(study.user_attrs.get("points_per_layer", 10)), seed=data.seed,
    )  # fmt: skip
    if set(trial.params) != set(objective.search_space):
        raise CLIError(
            f"trial {trial.number} does not match the prunable layers of {data.model}; "
            "wrong --checkpoint?"
        )
    if s.top_k > 1 and s.finetune_epochs > 0:
        trial = choose_fine_tuned(s, study, objective, splits, device, data.seed)
    elif rescoring:
        trial = choose_rescored(s, study, objective, data, config["val_size"], n_fresh, device)
    if s.top_k > 1:
        output = Path(s.output or f"{study.study_name}-trial{trial.number}.pt")
        check_writable(output, "--output file")
    path = export_to_file(objective, trial, output, study)
    from optuna_bocr.pruning import load_pruned

    pruned, metadata = load_pruned(path)
    if plot is not None:
        write_trial_plots(
            study, objective, trial, plot, plot.with_name(plot.stem + "-history" + plot.suffix)
        )
    measured = _measure(s, splits, original, pruned, metadata, device, data.seed, path)
    artifact_ids = upload_artifacts(s.artifact_store, study, path, plot)
    print_report(s, study, trial, metadata, measured, device, path, plot, artifact_ids)
    return 0


def _measure(
    s: ExportSettings,
    splits: Any,
    original: Any,
    pruned: Any,
    metadata: dict[str, Any],
    device: Any,
    seed: int,
    path: Path,
) -> dict[str, Any]:
    """Test accuracy (before and after fine-tuning) and latency; save the final model."""
    from torch.utils.data import Subset

    from optuna_bocr.pruning import save_pruned
    from optuna_bocr.training import evaluate
    from optuna_bocr.training import measure_latency
    from optuna_bocr.training import train

    test_set = splits.test
    if s.test_size is not None and s.test_size < len(test_set):
        test_set = Subset(test_set, range(s.test_size))
    out: dict[str, Any] = {"n_test": len(test_set), "after": None}
    out["top1_orig"], _ = evaluate(original, test_set, device=device)
    out["before"] = evaluate(pruned, test_set, device=device)
    if s.finetune_epochs > 0:
        print(f"Fine-tuning for {s.finetune_epochs:g} epoch(s) ...", flush=True)
        train(
            pruned, splits.train, epochs=s.finetune_epochs, batch_size=s.batch_size,
            lr=s.finetune_lr, device=device, seed=seed, max_images=s.finetune_images,
            augment=False, freeze_bn=s.finetune_bn == "frozen", progress=not s.quiet,
        )  # fmt: skip
        out["after"] = evaluate(pruned, test_set, device=device)
        metadata.update(
            finetune_epochs=s.finetune_epochs,
            test_top1=out["after"][0],
            test_top1_before_finetune=out["before"][0],
        )
    else:
        metadata.update(test_top1=out["before"][0])
    save_pruned(pruned.cpu().eval(), path, metadata=metadata)
    shape = (s.latency_batch, splits.in_channels, splits.image_size, splits.image_size)
    out["lat_orig"] = measure_latency(original, shape, device=device)
    out["lat_pruned"] = measure_latency(pruned, shape, device=device)
    return out
