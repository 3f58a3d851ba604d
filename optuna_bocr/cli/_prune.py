"""``optuna-bocr prune``: its options, their settings object and the up-front checks.

The job itself (data -> baseline -> objective -> sampler -> study -> export) is
:func:`optuna_bocr.cli._prune_job.run_prune`; it only reads a checked :class:`PruneSettings`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from optuna_bocr.cli._base import Command
from optuna_bocr.cli._base import int_list_or_keyword
from optuna_bocr.cli._base import nonneg_float
from optuna_bocr.cli._base import nonneg_int
from optuna_bocr.cli._base import positive_int
from optuna_bocr.cli._base import ratio
from optuna_bocr.cli._common import BUDGET_RULES
from optuna_bocr.cli._common import check_model_name
from optuna_bocr.cli._common import check_writable
from optuna_bocr.cli._common import CLIError
from optuna_bocr.cli._common import DEFAULT_BUDGET_RULE
from optuna_bocr.cli._common import DEFAULT_PATIENCE_GAIN
from optuna_bocr.cli._common import DEFAULT_STORAGE
from optuna_bocr.cli._common import LENGTHSCALES
from optuna_bocr.cli._common import OUTCOME_TRANSFORMS
from optuna_bocr.cli._common import require_module
from optuna_bocr.cli._common import resolve_device
from optuna_bocr.cli._common import SAMPLERS
from optuna_bocr.cli._settings import DataSettings
from optuna_bocr.cli._settings import TrainSettings
from optuna_bocr.cli._storage import check_storage


@dataclass(frozen=True)
class PruneSettings:
    """Everything ``optuna-bocr prune`` was asked to do, parsed once and checked up front."""

    data: DataSettings
    train: TrainSettings
    checkpoint: str | None
    flops_ratio: float
    budget_rule: str
    lbound: float
    rbound: float
    n_trials: int
    timeout: float | None
    sampler: str
    n_clusters: int
    bridge_clusters: str | list[int]
    rollback_at: str | list[int]
    patience: int | None
    patience_gain: float | None
    narrow_on_rollback: bool
    observe_actual: bool
    trust_region: bool | None
    lengthscales: str | None
    outcome_transform: str | None
    unstructured_fallback: bool
    distance: Literal["eu", "js"] | None
    n_startup_trials: int | None
    pruner: str
    val_size: int
    calibration_images: int
    points_per_layer: int
    workers: int
    storage: str
    study_name: str
    export: Path | None
    artifact_store: Path | None
    heartbeat: int
    verbose: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PruneSettings:
        """The settings of the parsed ``prune`` arguments (defaults resolved)."""
        data = DataSettings.from_args(args)
        study_name = args.study_name
        if study_name is None:
            safe = data.model.replace(":", "-")
            if ":" in data.model and not data.model.startswith("torchvision:"):
                where, _, attr = data.model.rpartition(":")
                safe = f"{Path(where).stem}-{attr}"  # your own network: file or module, factory
            study_name = f"{safe}-{data.dataset}-flops{args.flops_ratio:g}"
            if args.sampler != "bocr":
                study_name += f"-{args.sampler}"
        export = None if args.no_export else Path(args.export or f"{study_name}.pt")
        return cls(
            data=data,
            train=TrainSettings.from_args(args, "train-"),
            checkpoint=args.checkpoint,
            flops_ratio=args.flops_ratio,
            budget_rule=args.budget_rule,
            lbound=args.lbound,
            rbound=args.rbound,
            n_trials=args.n_trials,
            timeout=args.timeout,
            sampler=args.sampler,
            n_clusters=args.n_clusters,
            bridge_clusters=args.bridge_clusters,
            rollback_at=args.rollback_at,
            patience=args.patience,
            patience_gain=args.patience_gain,
            narrow_on_rollback=args.narrow_on_rollback,
            observe_actual=args.observe_actual,
            trust_region=args.trust_region,
            lengthscales=args.lengthscales,
            outcome_transform=args.outcome_transform,
            unstructured_fallback=args.unstructured_fallback,
            distance=args.distance,
            n_startup_trials=args.n_startup_trials,
            pruner=args.pruner,
            val_size=args.val_size,
            calibration_images=args.calibration_images,
            points_per_layer=args.points_per_layer,
            workers=args.workers,
            storage=args.storage,
            study_name=study_name,
            export=export,
            artifact_store=None if args.artifact_store is None else Path(args.artifact_store),
            heartbeat=args.heartbeat,
            verbose=args.verbose,
        )

    def check(self) -> None:
        """Refuse what can be refused without data, model or storage writes.

        Raises:
            CLIError: Unknown model, crossed bounds, BOCR's options with another sampler,
                unavailable device, a sampler or storage whose package is not installed, a
                storage or export file that cannot be written.
        """
        check_model_name(self.data.model, self.data.model_kwargs)
        if self.lbound > self.rbound:
            raise CLIError(f"--lbound {self.lbound} is above --rbound {self.rbound}")
        if self.rollback_at == "none" and self.bridge_clusters not in ("auto", "none"):
            raise CLIError("--bridge-clusters needs rollbacks (--rollback-at is none)")
        if self.sampler != "bocr":
            bocr_only = {
                "--distance": self.distance is not None,
                "--patience": self.patience is not None,
                "--patience-gain": self.patience_gain is not None,
                "--narrow-on-rollback": self.narrow_on_rollback,
                "--observe-actual": self.observe_actual,
                "--trust-region/--no-trust-region": self.trust_region is not None,
                "--lengthscales": self.lengthscales is not None,
                "--outcome-transform": self.outcome_transform is not None,
                "--unstructured-fallback": self.unstructured_fallback,
            }
            given = [flag for flag, set_ in bocr_only.items() if set_]
            if given:
                raise CLIError(
                    f"{', '.join(given)} only apply to --sampler bocr, not {self.sampler}: "
                    "drop them or use --sampler bocr"
                )
        resolve_device(self.data.device)
        if self.sampler == "cmaes":
            require_module("cmaes", "cmaes", "--sampler cmaes")
        check_storage(self.storage)
        if self.export is not None:
            check_writable(self.export, "--export file")
        if self.artifact_store is not None:
            if self.export is None:
                raise CLIError("--artifact-store uploads the exported model; drop --no-export")
            store = self.artifact_store.expanduser()
            if store.exists() and not store.is_dir():
                raise CLIError(f"--artifact-store {store} is not a directory")
            check_writable(store / "artifact", "--artifact-store folder")
        if self.checkpoint is not None and not Path(self.checkpoint).expanduser().is_file():
            raise CLIError(f"checkpoint not found: {Path(self.checkpoint).expanduser()}")


class PruneCommand(Command):
    """``optuna-bocr prune``."""

    name = "prune"
    help = "search per-layer pruning ratios under a FLOPs budget (the main job)"
    description = (
        "Prune a trained CNN to a FLOPs budget: an Optuna study (stored in --storage) "
        "searches one preserve ratio per prunable layer, maximising validation top-1 without "
        "fine-tuning; the best trial is exported at the end. Re-running the same command "
        "resumes the study until it has --n-trials finished trials."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        DataSettings.add_arguments(parser)
        g = parser.add_argument_group("search")
        g.add_argument(
            "--checkpoint",
            default=None,
            metavar="PATH",
            help="baseline weights (state dict, possibly wrapped in {'state_dict': ...} or "
            "with a 'module.' prefix); default: the cached baseline, trained first if missing",
        )
        g.add_argument(
            "--flops-ratio",
            type=ratio,
            default=0.5,
            metavar="R",
            help="keep at most this fraction of the FLOPs (default: %(default)s)",
        )
        g.add_argument(
            "--budget-rule",
            choices=BUDGET_RULES,
            default=DEFAULT_BUDGET_RULE,
            help="how proposed ratios meet the FLOPs budget: 'scale' multiplies them all by "
            "the largest factor that fits (the proportions stay), 'wall' clips them in network "
            "order as AMC and the BOCR paper do (default: %(default)s)",
        )
        g.add_argument("--lbound", type=ratio, default=0.1, help="lowest ratio (default: 0.1)")
        g.add_argument("--rbound", type=ratio, default=1.0, help="highest ratio (default: 1.0)")
        g.add_argument(
            "--n-trials",
            type=positive_int,
            default=60,
            metavar="N",
            help="finished trials the study should have; a re-run resumes up to this number, "
            "and several workers stop together at exactly this number (default: %(default)s)",
        )
        g.add_argument(
            "--timeout",
            type=nonneg_float,
            default=None,
            metavar="SECONDS",
            help="stop starting new trials after this many seconds",
        )
        g.add_argument(
            "--sampler",
            default="bocr",
            choices=SAMPLERS,
            help="bocr, or Optuna's gp, tpe, cmaes (needs optuna-bocr[cmaes]), random for "
            "comparison (default: %(default)s)",
        )
        g.add_argument(
            "--n-clusters",
            type=positive_int,
            default=3,
            metavar="K",
            help="BOCR: clusters of layers searched first (default: %(default)s)",
        )
        g.add_argument(
            "--bridge-clusters",
            type=int_list_or_keyword(("auto", "none")),
            default="auto",
            metavar="auto|none|K[,K...]",
            help="BOCR: intermediate clusterings before one variable per layer (gradual "
            "rollback); auto: 3 x --n-clusters when below the number of layers, else none "
            "(direct rollback) (default: %(default)s)",
        )
        g.add_argument(
            "--rollback-at",
            type=int_list_or_keyword(("auto", "none")),
            default="auto",
            metavar="auto|none|T[,T...]",
            help="BOCR: trial numbers of the rollbacks; auto: 50%% and 75%% of --n-trials "
            "(BOCR's 100 and 150 of 200); none: clustered BO only (default: %(default)s)",
        )
        g.add_argument(
            "--patience",
            type=positive_int,
            default=None,
            metavar="N",
            help="BOCR: roll back early after N trials without a new best, from 80%% of each "
            "rollback trial on (default: relative to each stage: max(6, 2 x its variables) "
            "trials in a row, from any trial)",
        )
        g.add_argument(
            "--patience-gain",
            type=nonneg_float,
            default=None,
            metavar="G",
            help="BOCR: for --patience, a trial is a new best only when it beats the last one "
            "by more than G x that best's lead over the median of the trials before it; 0: "
            f"any gain (default: {DEFAULT_PATIENCE_GAIN:g})",
        )
        g.add_argument(
            "--narrow-on-rollback",
            action="store_true",
            help="BOCR: narrow each new stage to the range of the 10 best trials (the original "
            "BOCR) instead of the whole --lbound..--rbound range",
        )
        g.add_argument(
            "--observe-actual",
            action="store_true",
            help="BOCR: fit the GP on the ratios after the FLOPs budget rule (and the moved "
            "proposals) instead of the ratios it proposed (the default, as Optuna's samplers)",
        )
        g.add_argument(
            "--trust-region",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="BOCR: after the first stage, search a box around the best trial that grows "
            "after new bests and shrinks without them (TuRBO) instead of the whole range "
            "(default: on)",
        )
        g.add_argument(
            "--lengthscales",
            choices=LENGTHSCALES,
            default=None,
            help="BOCR: the GP's lengthscales after the first stage: ard (one per ratio, the "
            "default), shared (one for all ratios) or clusters (one per first-stage cluster); "
            "tied ones also shape the trust region's box (shared: a cube)",
        )
        g.add_argument(
            "--outcome-transform",
            choices=OUTCOME_TRANSFORMS,
            default=None,
            help="BOCR: what the GP is fitted on: yeo-johnson (the accuracies warped by a "
            "fitted power transform, so that a few very bad networks do not squeeze the good "
            "ones together; the default), standardize (only standardised, as GPSampler), "
            "rank (the normal quantiles of their ranks) or yeo-johnson-after-first "
            "(standardised in the first, clustered stage, warped after it)",
        )
        g.add_argument(
            "--unstructured-fallback",
            action="store_true",
            help="BOCR: if the layer features do not group the layers better than chance (a "
            "permutation test; a warning says so either way), search one ratio per layer "
            "from the first trial instead of clustering",
        )
        g.add_argument(
            "--distance",
            choices=("eu", "js"),
            default=None,
            help="BOCR: distance between two layers' L1-importance densities for the "
            "clustering: eu (Euclidean, the default) or js (Jensen-Shannon; the structure "
            "warning names it when only it passes)",
        )
        g.add_argument(
            "--n-startup-trials",
            type=positive_int,
            default=None,
            metavar="N",
            help="quasi-random trials before the model (bocr, gp, tpe), and the median "
            "pruner's warm-up (default: the sampler's own: bocr 5, gp and tpe 10; the "
            "pruner 10)",
        )
        g.add_argument(
            "--pruner",
            default="none",
            choices=("none", "median"),
            help="Optuna pruner: none (every trial scores the whole validation split, as BOCR "
            "does), or median (stop trials whose running accuracy is below the median; saves "
            "time, but the sampler learns nothing from pruned trials) (default: %(default)s)",
        )
        g.add_argument(
            "--val-size",
            type=positive_int,
            default=2000,
            metavar="N",
            help="validation images (from the training set) scoring each trial "
            "(default: %(default)s)",
        )
        g.add_argument(
            "--calibration-images",
            type=positive_int,
            default=3000,
            metavar="N",
            help="training images whose features drive the least-squares weight "
            "reconstruction (default: %(default)s)",
        )
        g.add_argument(
            "--points-per-layer",
            type=positive_int,
            default=10,
            metavar="N",
            help="spatial samples per image and layer for the reconstruction "
            "(default: %(default)s)",
        )
        g.add_argument(
            "--workers",
            type=positive_int,
            default=1,
            metavar="N",
            help="trials run at once in threads, each with its own copy of the model (useful "
            "on a GPU). For several processes or machines, run the same command with the same "
            "--storage (an RDB URL such as postgresql://...) in each (default: %(default)s)",
        )
        g = parser.add_argument_group("storage and output")
        g.add_argument(
            "--storage",
            default=DEFAULT_STORAGE,
            metavar="URL",
            help="Optuna storage (default: %(default)s): an SQLAlchemy URL such as "
            "sqlite:///FILE or postgresql://... (needs optuna-bocr[postgresql]), or the path "
            "of a JournalStorage file",
        )
        g.add_argument(
            "--study-name",
            default=None,
            metavar="NAME",
            help="study name (default: <model>-<dataset>-flops<ratio>[-<sampler>], e.g. "
            "resnet20-fashion-mnist-flops0.5)",
        )
        g.add_argument(
            "--heartbeat",
            type=nonneg_int,
            default=60,
            metavar="SECONDS",
            help="RDB storages: each running trial records a heartbeat this often; a trial "
            "whose worker died (no heartbeat for twice this) is failed and re-queued by the "
            "next worker; 0: off (default: %(default)s)",
        )
        g.add_argument(
            "--export",
            default=None,
            metavar="PATH",
            help="file for the pruned model of the best trial (default: <study-name>.pt)",
        )
        g.add_argument("--no-export", action="store_true", help="do not export the best trial")
        g.add_argument(
            "--artifact-store",
            default=None,
            metavar="DIR",
            help="upload the exported model and its per-layer plot to this Optuna "
            "FileSystemArtifactStore, attached to the study (view them with `optuna-dashboard "
            "<storage> --artifact-dir DIR`)",
        )
        g.add_argument("--verbose", action="store_true", help="log every trial (Optuna INFO logs)")
        TrainSettings.add_arguments(parser, "train-", epochs=2.0)

    def take_action(self, args: argparse.Namespace) -> int:
        from optuna_bocr.cli._prune_job import run_prune

        settings = PruneSettings.from_args(args)
        settings.check()
        return run_prune(settings)
