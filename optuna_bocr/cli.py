"""The ``optuna-bocr`` command: ``train`` a baseline, ``prune`` it with BOCR, ``export`` a trial.

Run ``optuna-bocr <command> --help`` for the options; docs/cli.md is the reference.
Bad input ends with one line on stderr and exit status 2, and leaves existing studies as
they were: every check that can fail runs before anything is written to the storage.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from collections.abc import Sequence
import copy
import math
import os
from pathlib import Path
import queue
import sys
import time
from typing import Any
from typing import NoReturn
import warnings

import optuna
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

_logger = optuna.logging.get_logger(__name__)

PROG = "optuna-bocr"
DEFAULT_STORAGE = "sqlite:///optuna-bocr.db"
SAMPLERS = ("bocr", "gp", "tpe", "cmaes", "random")

# Study user attrs written by ``prune`` and read back by ``export`` (CLI-only; the keys that
# the sampler and the objective share live in optuna_bocr._keys).
_STUDY_CONFIG_KEYS = (
    "model",
    "dataset",
    "flops_target",
    "lbound",
    "rbound",
    "val_size",
    "seed",
    "image_size",
)
_CONFIG_ATTR = "optuna_bocr:config"


class CLIError(Exception):
    """Bad input: reported as one line on stderr with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# -- small helpers ------------------------------------------------------------------------


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


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    if isinstance(e, KeyError) and text.startswith("'") and text.endswith("'"):
        text = text[1:-1]
    return text.splitlines()[0] if text else type(e).__name__


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/optuna-bocr``, by default ``~/.cache/optuna-bocr``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "optuna-bocr"


def baseline_path(
    cache_dir: str | os.PathLike[str] | None, model: str, dataset: str, seed: int
) -> Path:
    """Where ``train`` saves, and ``prune`` looks for, a cached baseline checkpoint."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    safe = model.replace(":", "-").replace("/", "-")
    return base / "checkpoints" / f"{safe}-{dataset}-seed{seed}.pt"


def _check_model_name(name: str) -> None:
    from optuna_bocr.models import model_names

    if name in model_names():
        return
    if name.startswith("torchvision:"):
        import torchvision

        if name.split(":", 1)[1] in torchvision.models.list_models(module=torchvision.models):
            return
    raise CLIError(
        f"unknown model {name!r}; choose one of {', '.join(model_names())} "
        "or torchvision:<name> (e.g. torchvision:resnet18)"
    )


def _resolve_device(name: str) -> Any:
    from optuna_bocr._training import resolve_device

    try:
        return resolve_device(name)
    except ValueError as e:
        raise CLIError(_first_line(e)) from e


def _load_data(args: argparse.Namespace, val_size: int) -> Any:
    from optuna_bocr.data import load_splits

    try:
        return load_splits(
            args.dataset,
            root=args.data_dir,
            download=args.download,
            val_size=val_size,
            seed=args.seed,
            image_size=args.image_size,
        )
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        raise CLIError(_first_line(e)) from e


def _build_model(name: str, splits: Any) -> Any:
    from optuna_bocr.models import build_model

    try:
        return build_model(name, num_classes=splits.num_classes, in_channels=splits.in_channels)
    except ValueError as e:
        raise CLIError(_first_line(e)) from e


def _load_weights(model: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint into ``model``; return the metadata ``train`` stored with it."""
    import torch

    from optuna_bocr.models import load_checkpoint

    path = os.fspath(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        load_checkpoint(model, obj)
    except FileNotFoundError as e:
        raise CLIError(f"checkpoint not found: {path}") from e
    except Exception as e:  # noqa: BLE001 - any unreadable or mismatched file is bad input
        raise CLIError(f"cannot load checkpoint {path}: {_first_line(e)}") from e
    meta = obj.get("optuna_bocr") if isinstance(obj, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def _train_baseline(
    model: Any,
    splits: Any,
    *,
    args: argparse.Namespace,
    epochs: float,
    max_images: int | None,
    lr: float,
    batch_size: int,
    device: Any,
    output: Path,
    val_size: int,
    augment: bool,
) -> dict[str, Any]:
    import torch

    from optuna_bocr._training import evaluate
    from optuna_bocr._training import train

    n = len(splits.train) if max_images is None else min(max_images, len(splits.train))
    print(
        f"Training a {args.model} baseline on {splits.name}: {epochs:g} epoch(s) of {n} images "
        f"on {device} ...",
        flush=True,
    )
    t0 = time.perf_counter()
    train(
        model,
        splits.train,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        device=device,
        seed=args.seed,
        max_images=max_images,
        augment=augment,
        progress=not args.quiet,
    )
    seconds = time.perf_counter() - t0
    val_top1, _ = evaluate(model, splits.val, device=device)
    meta = {
        "model": args.model,
        "dataset": splits.name,
        "val_size": val_size,
        "seed": args.seed,
        "image_size": splits.image_size,
        "epochs": epochs,
        "train_images_per_epoch": n,
        "augment": augment,
        "val_top1": val_top1,
        "train_seconds": seconds,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = output.with_name(output.name + ".tmp")
    torch.save({"state_dict": state, "optuna_bocr": meta}, tmp)
    os.replace(tmp, output)
    print(
        f"Baseline: {val_top1:.2f}% top-1 on {len(splits.val)} validation images after "
        f"{seconds:.0f} s; saved to {output}",
        flush=True,
    )
    return meta


# -- argument parser ----------------------------------------------------------------------


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


# -- train --------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    """``optuna-bocr train``."""
    from torch.utils.data import Subset

    from optuna_bocr._training import evaluate

    _check_model_name(args.model)
    device = _resolve_device(args.device)
    if args.epochs <= 0:
        raise CLIError("--epochs must be positive")
    splits = _load_data(args, args.val_size)
    model = _build_model(args.model, splits)
    output = (
        Path(args.output)
        if args.output
        else baseline_path(args.cache_dir, args.model, splits.name, args.seed)
    )
    _check_writable(output)
    _train_baseline(
        model,
        splits,
        args=args,
        epochs=args.epochs,
        max_images=args.images,
        lr=args.lr,
        batch_size=args.batch_size,
        device=device,
        output=output,
        val_size=args.val_size,
        augment=args.augment,
    )
    test_set = splits.test
    if args.test_size is not None and args.test_size < len(test_set):
        test_set = Subset(test_set, range(args.test_size))
    top1, top5 = evaluate(model, test_set, device=device)
    print(f"Test accuracy: top-1 {top1:.2f}%, top-5 {top5:.2f}% ({len(test_set)} images)")
    return 0


def _check_writable(path: Path) -> None:
    parent = path.expanduser().resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"cannot create directory {parent}: {_first_line(e)}") from e
    if not os.access(parent, os.W_OK):
        raise CLIError(f"cannot write to {parent}")


# -- prune --------------------------------------------------------------------------------


def _open_storage(url: str) -> optuna.storages.BaseStorage:
    try:
        return optuna.storages.get_storage(url)
    except Exception as e:  # noqa: BLE001 - any failure to open is bad input for the user
        raise CLIError(f"cannot open storage {url!r}: {_first_line(e)}") from e


def _load_study_or_none(
    storage: optuna.storages.BaseStorage, name: str
) -> optuna.study.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


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
    stored = study.user_attrs.get(_CONFIG_ATTR)
    if stored is None:
        return
    wanted = _study_config(args)
    diffs = [
        f"{k}={stored.get(k)!r} (now {wanted[k]!r})"
        for k in _STUDY_CONFIG_KEYS
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
            raise CLIError(f"invalid BOCR settings: {_first_line(e)}") from e
    if args.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=args.n_startup_trials)
    if args.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=args.n_startup_trials)
    if args.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _n_finished(study: optuna.study.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _fmt_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def _prepare_baseline(
    args: argparse.Namespace, splits: Any, model: Any, device: Any
) -> tuple[str, dict[str, Any]]:
    """Load (or train and cache) the baseline weights; return the checkpoint path used."""
    if args.checkpoint:
        path = Path(args.checkpoint).expanduser()
        if not path.is_file():
            raise CLIError(f"checkpoint not found: {path}")
        return str(path.resolve()), _load_weights(model, path)
    path = baseline_path(args.cache_dir, args.model, splits.name, args.seed)
    if path.is_file():
        meta = _load_weights(model, path)
        print(f"Using cached baseline {path}", flush=True)
        return str(path.resolve()), meta
    _check_writable(path)
    if args.train_epochs <= 0:
        raise CLIError(f"no checkpoint given or cached at {path}, and --train-epochs is 0")
    _check_feasible(args, splits, device)
    meta = _train_baseline(
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
    model = _build_model(args.model, splits)
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
        raise CLIError(_first_line(e)) from e


def _make_objective(
    args: argparse.Namespace, splits: Any, model: Any, device: Any, calibration_images: int
) -> Any:
    from optuna_bocr.pruning import PruningObjective

    try:
        return PruningObjective(
            model,
            calibration=splits.train,
            validation=splits.val,
            flops_ratio=args.flops_ratio,
            lbound=args.lbound,
            rbound=args.rbound,
            device=device,
            n_calibration_images=calibration_images,
            points_per_layer=args.points_per_layer,
            seed=args.seed,
        )
    except (ValueError, TypeError, FloatingPointError) as e:
        raise CLIError(_first_line(e)) from e


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
    from optuna_bocr._keys import FLOPS_RATIO_KEY
    from optuna_bocr._keys import PARAMS_RATIO_KEY
    from optuna_bocr._keys import STAGE_KEY

    if not args.verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    # 1. Cheap checks first, nothing written yet.
    _check_model_name(args.model)
    if args.lbound > args.rbound:
        raise CLIError(f"--lbound {args.lbound} is above --rbound {args.rbound}")
    device = _resolve_device(args.device)
    if args.sampler == "bocr":
        from optuna_bocr import BOCRSampler  # noqa: F401 - fail early if unavailable
    study_name = args.study_name or _default_study_name(args)
    storage = _open_storage(args.storage)
    existing = _load_study_or_none(storage, study_name)
    if existing is not None:
        _check_existing_study(existing, args)
    export_path = None if args.no_export else Path(args.export or f"{study_name}.pt")
    if export_path is not None:
        _check_writable(export_path)

    # 2. Data, baseline, objective (may train a baseline; still nothing in the storage).
    splits = _load_data(args, args.val_size)
    calibration_images = min(args.calibration_images, len(splits.train))
    model = _build_model(args.model, splits)
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
    objective = _make_objective(args, splits, model.to(device), device, calibration_images)
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
        raise CLIError(f"cannot create study {study_name!r}: {_first_line(e)}") from e
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["top1"])
    if _CONFIG_ATTR not in study.user_attrs:
        config = _study_config(args)
        study.set_user_attr(_CONFIG_ATTR, config)
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
        exported = _export_to_file(objective, best, export_path, study)
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
            f"{_fmt_count(objective.original_flops)} -> "
            f"{_fmt_count(objective.original_flops * flops_ratio)} ({flops_ratio:.3f}, "
            f"target {args.flops_ratio:g})",
        ),
        (
            "Params",
            f"{_fmt_count(objective.original_params)} -> "
            f"{_fmt_count(objective.original_params * params_ratio)} ({params_ratio:.3f})",
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


def _export_to_file(
    objective: Any,
    trial: FrozenTrial,
    path: Path,
    study: optuna.study.Study,
) -> Path:
    from optuna_bocr._keys import ACTUAL_PARAMS_KEY
    from optuna_bocr.pruning import count_flops
    from optuna_bocr.pruning import save_pruned

    try:
        pruned = objective.export(trial)
    except (ValueError, TypeError, RuntimeError) as e:
        raise CLIError(f"cannot export trial {trial.number}: {_first_line(e)}") from e
    input_size = tuple(int(s) for s in objective.input_size)
    config = study.user_attrs.get(_CONFIG_ATTR, {})
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
        **{k: config.get(k) for k in _STUDY_CONFIG_KEYS},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_pruned(pruned.cpu(), path, metadata=metadata)
    return path


# -- export -------------------------------------------------------------------------------


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
    study = _load_study_or_none(storage, name)
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

    from optuna_bocr._keys import ACTUAL_PARAMS_KEY

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

    from optuna_bocr._training import evaluate
    from optuna_bocr._training import measure_latency
    from optuna_bocr._training import train

    device = _resolve_device(args.device)
    storage = _open_storage(args.storage)
    study = _pick_study(storage, args.study_name, args.storage)
    config = study.user_attrs.get(_CONFIG_ATTR)
    if not isinstance(config, dict):
        raise CLIError(f"study {study.study_name!r} was not made by `optuna-bocr prune`")
    trial = _pick_trial(study, args.trial)
    output = Path(args.output or f"{study.study_name}-trial{trial.number}.pt")
    _check_writable(output)
    plot = Path(args.plot) if args.plot else None
    if plot is not None:
        _check_writable(plot)

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
    splits = _load_data(ns, ns.val_size)
    model = _build_model(ns.model, splits)
    _load_weights(model, checkpoint)
    original = copy.deepcopy(model)
    calibration_images = int(study.user_attrs.get("calibration_images", 3000))
    print(f"Rebuilding the pruning objective of study {study.study_name!r} ...", flush=True)
    objective = _make_objective(ns, splits, model.to(device), device, calibration_images)
    names = set(objective.search_space)
    if set(trial.params) != names:
        raise CLIError(
            f"trial {trial.number} does not match the prunable layers of {ns.model}; "
            "wrong --checkpoint?"
        )
    path = _export_to_file(objective, trial, output, study)
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
            f"{_fmt_count(metadata['original_flops'])} -> {_fmt_count(metadata['flops'])} "
            f"({metadata['flops'] / metadata['original_flops']:.3f})",
        ),
        (
            "Params",
            f"{_fmt_count(metadata['original_params'])} -> {_fmt_count(metadata['params'])} "
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


# -- entry point --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``optuna-bocr`` command line.

    Args:
        argv:
            Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on bad input, 130 when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CLIError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
