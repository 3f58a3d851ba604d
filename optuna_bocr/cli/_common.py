"""What the ``optuna-bocr`` subcommands share: errors, data, model, storage, objective."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import optuna

PROG = "optuna-bocr"
DEFAULT_STORAGE = "sqlite:///optuna-bocr.db"
SAMPLERS = ("bocr", "gp", "tpe", "cmaes", "random")


# Study user attrs written by ``prune`` and read back by ``export`` (CLI-only; the keys that
# the sampler and the objective share live in optuna_bocr.keys).
STUDY_CONFIG_KEYS = (
    "model",
    "dataset",
    "flops_target",
    "lbound",
    "rbound",
    "val_size",
    "seed",
    "image_size",
)


class CLIError(Exception):
    """Bad input: reported as one line on stderr with exit status 2."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, for a one-line error."""
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


def check_model_name(name: str) -> None:
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


def resolve_device(name: str) -> Any:
    from optuna_bocr.training import resolve_device

    try:
        return resolve_device(name)
    except ValueError as e:
        raise CLIError(first_line(e)) from e


def load_data(args: argparse.Namespace, val_size: int) -> Any:
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
        raise CLIError(first_line(e)) from e


def build_model(name: str, splits: Any, *, seed: int | None = None) -> Any:
    from optuna_bocr.models import build_model

    try:
        return build_model(
            name, num_classes=splits.num_classes, in_channels=splits.in_channels, seed=seed
        )
    except ValueError as e:
        raise CLIError(first_line(e)) from e


def load_weights(model: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
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
        raise CLIError(f"cannot load checkpoint {path}: {first_line(e)}") from e
    meta = obj.get("optuna_bocr") if isinstance(obj, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def check_writable(path: Path) -> None:
    parent = path.expanduser().resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"cannot create directory {parent}: {first_line(e)}") from e
    if not os.access(parent, os.W_OK):
        raise CLIError(f"cannot write to {parent}")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    try:
        return optuna.storages.get_storage(url)
    except Exception as e:  # noqa: BLE001 - any failure to open is bad input for the user
        raise CLIError(f"cannot open storage {url!r}: {first_line(e)}") from e


def load_study_or_none(
    storage: optuna.storages.BaseStorage, name: str
) -> optuna.study.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def make_objective(
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
        raise CLIError(first_line(e)) from e


def fmt_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"
