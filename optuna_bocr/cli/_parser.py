"""The ``optuna-bocr`` argument parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable
import math
from typing import NoReturn

from optuna_bocr.cli._common import DEFAULT_STORAGE
from optuna_bocr.cli._common import PROG
from optuna_bocr.cli._common import SAMPLERS
from optuna_bocr.cli._export import cmd_export
from optuna_bocr.cli._prune import cmd_prune
from optuna_bocr.cli._train import cmd_train


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _int_list_or_keyword(keywords: tuple[str, ...]) -> Callable[[str], str | list[int]]:
    def parse(text: str) -> str | list[int]:
        if text.lower() in keywords:
            return text.lower()
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {' or '.join(keywords)} or comma-separated integers, got {text!r}"
            ) from None
        if not values or any(v < 1 for v in values):
            raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
        return values

    return parse


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and data")
    g.add_argument(
        "--model",
        default="resnet20",
        help="resnet20, resnet32, resnet44, resnet56, resnet110, mobilenet_v1, or "
        "torchvision:<name> (e.g. torchvision:resnet18) (default: %(default)s)",
    )
    g.add_argument(
        "--dataset",
        default="fashion-mnist",
        choices=("fashion-mnist", "cifar10", "imagefolder"),
        help="dataset (default: %(default)s)",
    )
    g.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="data directory. fashion-mnist: a folder with the four idx .gz files or "
        "torchvision's FashionMNIST/ layout (default: $OPTUNA_BOCR_DATA, then "
        "/usr/share/datasets/fashion-mnist from `apt-get install dataset-fashion-mnist`); "
        "cifar10: the folder holding cifar-10-batches-py; imagefolder: a folder with "
        "train/<class>/ and val/ or test/",
    )
    g.add_argument(
        "--download", action="store_true", help="download fashion-mnist or cifar10 if missing"
    )
    g.add_argument(
        "--image-size",
        type=_positive_int,
        default=32,
        metavar="N",
        help="image side in pixels (Fashion-MNIST is zero-padded from 28) (default: %(default)s)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of everything (default: %(default)s)")
    g.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA if available), cpu, cuda, cuda:1, ... (default: %(default)s)",
    )
    g.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="where baseline checkpoints are cached (default: $XDG_CACHE_HOME/optuna-bocr, "
        "i.e. ~/.cache/optuna-bocr)",
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _add_train_args(p: argparse.ArgumentParser, prefix: str, *, epochs: float) -> None:
    what = "baseline training, when no checkpoint is given or cached" if prefix else "training"
    g = p.add_argument_group(what)
    g.add_argument(
        f"--{prefix}epochs",
        type=_nonneg_float,
        default=epochs,
        metavar="E",
        help="epochs (may be fractional) (default: %(default)s)",
    )
    g.add_argument(
        f"--{prefix}images",
        type=_positive_int,
        default=30000,
        metavar="N",
        help="training images drawn per epoch (default: %(default)s; use a large number "
        "for full epochs)",
    )
    g.add_argument(
        f"--{prefix}lr",
        type=_nonneg_float,
        default=0.1,
        metavar="LR",
        help="initial SGD learning rate, cosine-annealed (default: %(default)s)",
    )
    g.add_argument(
        f"--{prefix}augment",
        action="store_true",
        help="random 4-pixel shifts and horizontal flips (worth it for long runs; off by "
        "default because it slows down the short default training)",
    )
    g.add_argument(
        f"--{prefix}batch-size",
        type=_positive_int,
        default=128,
        metavar="B",
        help="batch size (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``optuna-bocr`` argument parser."""
    parser = _Parser(
        prog=PROG,
        description="Channel pruning of CNNs with BOCR (Bayesian optimisation with clustering "
        "and rollback) on Optuna. Start with `optuna-bocr prune`.",
    )
    from optuna_bocr import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    # train
    p = sub.add_parser(
        "train",
        help="train a baseline model and save the checkpoint",
        description="Train a baseline of a shipped model on a dataset (SGD, cosine learning "
        "rate, random crops and flips) and save the checkpoint where `prune` finds it.",
    )
    _add_data_args(p)
    p.add_argument(
        "--val-size",
        type=_positive_int,
        default=5000,
        metavar="N",
        help="training images held out for validation; `prune` must use at most this many "
        "with the same --seed so that its validation images were never trained on "
        "(default: %(default)s)",
    )
    _add_train_args(p, "", epochs=2.0)
    p.add_argument(
        "--test-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="report accuracy on the first N test images only (default: the whole test set)",
    )
    p.add_argument(
        "--output",
        default=None,
        metavar="PATH",
        help="checkpoint file (default: the cache path that `prune` looks up, "
        "<cache-dir>/checkpoints/<model>-<dataset>-seed<seed>.pt)",
    )
    p.set_defaults(func=cmd_train)

    # prune
    p = sub.add_parser(
        "prune",
        help="search per-layer pruning ratios under a FLOPs budget (the main job)",
        description="Prune a trained CNN to a FLOPs budget: an Optuna study (stored in "
        "--storage) searches one preserve ratio per prunable layer, maximising validation "
        "top-1 without fine-tuning; the best trial is exported at the end. Re-running the "
        "same command resumes the study until it has --n-trials finished trials.",
    )
    _add_data_args(p)
    g = p.add_argument_group("search")
    g.add_argument(
        "--checkpoint",
        default=None,
        metavar="PATH",
        help="baseline weights (state dict, possibly wrapped in {'state_dict': ...} or with a "
        "'module.' prefix); default: the cached baseline, trained first if missing",
    )
    g.add_argument(
        "--flops-ratio",
        type=_ratio,
        default=0.5,
        metavar="R",
        help="keep at most this fraction of the FLOPs (default: %(default)s)",
    )
    g.add_argument("--lbound", type=_ratio, default=0.1, help="lowest ratio (default: 0.1)")
    g.add_argument("--rbound", type=_ratio, default=1.0, help="highest ratio (default: 1.0)")
    g.add_argument(
        "--n-trials",
        type=_positive_int,
        default=60,
        metavar="N",
        help="finished trials the study should have; a re-run resumes up to this number "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--timeout",
        type=_nonneg_float,
        default=None,
        metavar="SECONDS",
        help="stop starting new trials after this many seconds",
    )
    g.add_argument(
        "--sampler",
        default="bocr",
        choices=SAMPLERS,
        help="bocr, or Optuna's gp, tpe, cmaes, random for comparison (default: %(default)s)",
    )
    g.add_argument(
        "--n-clusters",
        type=_positive_int,
        default=3,
        metavar="K",
        help="BOCR: clusters of layers searched first (default: %(default)s)",
    )
    g.add_argument(
        "--bridge-clusters",
        type=_int_list_or_keyword(("auto", "none")),
        default="auto",
        metavar="auto|none|K[,K...]",
        help="BOCR: intermediate clusterings before one variable per layer (gradual "
        "rollback); auto: 3 x --n-clusters when below the number of layers, else none "
        "(direct rollback) (default: %(default)s)",
    )
    g.add_argument(
        "--rollback-at",
        type=_int_list_or_keyword(("auto", "none")),
        default="auto",
        metavar="auto|none|T[,T...]",
        help="BOCR: trial numbers of the rollbacks; auto: 50%% and 75%% of --n-trials (BOCR's "
        "100 and 150 of 200); none: clustered BO only (default: %(default)s)",
    )
    g.add_argument(
        "--patience",
        type=_positive_int,
        default=None,
        metavar="N",
        help="BOCR: roll back early after N trials without a new best, from 40%% / 65%% of "
        "--n-trials on (default: max(5, 10%% of --n-trials))",
    )
    g.add_argument(
        "--unstructured-fallback",
        action="store_true",
        help="BOCR: if the layer features do not group the layers better than chance (a "
        "permutation test; a warning says so either way), search one ratio per layer from "
        "the first trial instead of clustering",
    )
    g.add_argument(
        "--n-startup-trials",
        type=_positive_int,
        default=10,
        metavar="N",
        help="quasi-random trials before the GP (bocr, gp, tpe) (default: %(default)s)",
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
        type=_positive_int,
        default=2000,
        metavar="N",
        help="validation images (from the training set) scoring each trial (default: %(default)s)",
    )
    g.add_argument(
        "--calibration-images",
        type=_positive_int,
        default=3000,
        metavar="N",
        help="training images whose features drive the least-squares weight "
        "reconstruction (default: %(default)s)",
    )
    g.add_argument(
        "--points-per-layer",
        type=_positive_int,
        default=10,
        metavar="N",
        help="spatial samples per image and layer for the reconstruction (default: %(default)s)",
    )
    g.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="trials run at once in threads, each with its own copy of the model (useful on "
        "a GPU). For several processes or machines, run the same command with the same "
        "--storage (an RDB URL such as postgresql://...) in each (default: %(default)s)",
    )
    g = p.add_argument_group("storage and output")
    g.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        metavar="URL",
        help="Optuna storage URL (default: %(default)s)",
    )
    g.add_argument(
        "--study-name",
        default=None,
        metavar="NAME",
        help="study name (default: <model>-<dataset>-flops<ratio>[-<sampler>], e.g. "
        "resnet20-fashion-mnist-flops0.5)",
    )
    g.add_argument(
        "--export",
        default=None,
        metavar="PATH",
        help="file for the pruned model of the best trial (default: <study-name>.pt)",
    )
    g.add_argument("--no-export", action="store_true", help="do not export the best trial")
    g.add_argument("--verbose", action="store_true", help="log every trial (Optuna INFO logs)")
    _add_train_args(p, "train-", epochs=2.0)
    p.set_defaults(func=cmd_prune)

    # export
    p = sub.add_parser(
        "export",
        help="build the pruned model of a trial, fine-tune it, measure it",
        description="Rebuild the pruned network of a trial of a `prune` study (the best by "
        "default) as a physically smaller model file; optionally fine-tune it; report test "
        "accuracy before/after fine-tuning and the latency of the original and pruned models.",
    )
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
        "--trial", type=int, default=None, metavar="NUMBER", help="trial number (default: best)"
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
        "--data-dir", default=None, metavar="DIR", help="(default: the one recorded by `prune`)"
    )
    p.add_argument("--download", action="store_true", help="download the dataset if missing")
    p.add_argument("--device", default="auto", help="(default: %(default)s)")
    p.add_argument(
        "--finetune-epochs",
        type=_nonneg_float,
        default=0.0,
        metavar="E",
        help="fine-tuning epochs after export (SGD, cosine) (default: %(default)s)",
    )
    p.add_argument(
        "--finetune-images",
        type=_positive_int,
        default=None,
        metavar="N",
        help="training images per fine-tuning epoch (default: all)",
    )
    p.add_argument(
        "--finetune-lr", type=_nonneg_float, default=0.01, metavar="LR", help="(default: 0.01)"
    )
    p.add_argument(
        "--finetune-bn",
        default="frozen",
        choices=("frozen", "train"),
        help="batch norm during fine-tuning: frozen running statistics (best for short "
        "fine-tuning) or updated as in normal training (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size", type=_positive_int, default=128, metavar="B", help="(default: 128)"
    )
    p.add_argument(
        "--test-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="evaluate on the first N test images only (default: the whole test set)",
    )
    p.add_argument(
        "--latency-batch",
        type=_positive_int,
        default=64,
        metavar="B",
        help="batch size of the latency measurement (default: %(default)s)",
    )
    p.add_argument(
        "--plot",
        default=None,
        metavar="PNG",
        help="write a bar chart of kept vs original channels per layer",
    )
    p.add_argument(
        "--artifact-store",
        default=None,
        metavar="DIR",
        help="also upload the model file to this Optuna FileSystemArtifactStore (view it "
        "with `optuna-dashboard <storage> --artifact-dir DIR`)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_export)
    return parser
