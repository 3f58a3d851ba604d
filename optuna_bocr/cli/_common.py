"""What the ``optuna-bocr`` subcommands share: errors, data, model, storage, objective."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
import tempfile
from typing import Any
from typing import TYPE_CHECKING

import optuna

if TYPE_CHECKING:
    from optuna_bocr.cli._settings import DataSettings

PROG = "optuna-bocr"
DEFAULT_STORAGE = "sqlite:///optuna-bocr.db"
SAMPLERS = ("bocr", "gp", "tpe", "cmaes", "random")


# Study user attrs written by ``prune`` and read back by ``export`` (CLI-only; the keys that
# the sampler and the objective share live in optuna_bocr.keys).
STUDY_CONFIG_KEYS = (
    "model",
    "dataset",
    "flops_target",
    "budget_rule",
    "lbound",
    "rbound",
    "val_size",
    "seed",
    "image_size",
    "model_kwargs",
)


BUDGET_RULES = ("scale", "wall")
"""``--budget-rule`` choices: PruningObjective's ``budget_rule`` values (no torch import)."""
DEFAULT_BUDGET_RULE = "scale"
"""``prune``'s default budget rule."""
DEFAULT_TRUST_REGION = True
"""``BOCRSampler``'s default ``trust_region`` (kept here so that ``--help`` imports no torch)."""
LENGTHSCALES = ("ard", "shared", "clusters")
"""``--lengthscales`` choices: ``BOCRSampler``'s ``lengthscales`` values."""
DEFAULT_LENGTHSCALES = "ard"
"""``BOCRSampler``'s default ``lengthscales``."""
OUTCOME_TRANSFORMS = ("standardize", "yeo-johnson", "rank", "yeo-johnson-after-first")
"""``--outcome-transform`` choices: ``BOCRSampler``'s ``outcome_transform`` values."""
DEFAULT_OUTCOME_TRANSFORM = "yeo-johnson"
"""``BOCRSampler``'s default ``outcome_transform``."""
DEFAULT_PATIENCE_GAIN = 0.05
"""``BOCRSampler``'s default ``patience_gain``."""
STARTUP_TRIALS = 10
"""Trials before GPSampler and TPE model (Optuna's default) and before ``--pruner median``
prunes, unless ``--n-startup-trials`` says; BOCR has its own default."""
STUDY_CONFIG_LEGACY = {"budget_rule": "wall"}
"""What a study stored before a key existed meant (studies made by earlier versions)."""


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
    cache_dir: str | os.PathLike[str] | None,
    model: str,
    dataset: str,
    seed: int,
    model_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Where ``train`` saves, and ``prune`` looks for, a cached baseline checkpoint."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    safe = model.replace(":", "-").replace("/", "-")
    if ":" in model and not model.startswith("torchvision:"):
        import hashlib
        import json

        # Your own network: its factory's name and a digest of the spec and kwargs.
        key = json.dumps([model, model_kwargs or {}], sort_keys=True)
        where, _, attr = model.rpartition(":")
        safe = f"{Path(where).stem}-{attr}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    return base / "checkpoints" / f"{safe}-{dataset}-seed{seed}.pt"


def check_model_name(name: str, model_kwargs: dict[str, Any] | None = None) -> None:
    """Refuse an unknown model, or a factory that does not give an ``nn.Module``.

    A factory (``module:factory``, ``file.py:factory``) is imported and called once, on the
    CPU, so that every error shows before any data is loaded or anything is written.
    """
    from optuna_bocr.models import build_user_model
    from optuna_bocr.models import is_factory_spec
    from optuna_bocr.models import model_names
    from optuna_bocr.models import ModelSpecError

    if is_factory_spec(name):
        try:
            build_user_model(name, model_kwargs)
        except ModelSpecError as e:
            raise CLIError(str(e)) from e
        return
    if model_kwargs:
        raise CLIError(
            f"--model-kwargs applies only to your own network (--model module:factory or "
            f"file.py:factory), not to {name!r}"
        )
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


def load_data(data: DataSettings, val_size: int) -> Any:
    """The train / validation / test splits of ``data.dataset``."""
    from optuna_bocr.data import load_splits

    try:
        return load_splits(
            data.dataset,
            root=data.data_dir,
            download=data.download,
            val_size=val_size,
            seed=data.seed,
            image_size=data.image_size,
        )
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        raise CLIError(first_line(e)) from e


def build_model(
    name: str, splits: Any, *, seed: int | None = None, kwargs: dict[str, Any] | None = None
) -> Any:
    """The network ``name`` (``kwargs`` go to a user factory) for ``splits``' images."""
    from optuna_bocr.models import build_model
    from optuna_bocr.models import build_user_model
    from optuna_bocr.models import is_factory_spec
    from optuna_bocr.models import ModelSpecError

    if is_factory_spec(name):
        try:
            return build_user_model(name, kwargs, seed=seed)
        except ModelSpecError as e:
            raise CLIError(str(e)) from e
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


def check_writable(path: Path, what: str = "output") -> None:
    """Refuse, before any work, an output file that cannot be written.

    The path must not be a directory, and the nearest existing folder above it must let a
    file be created there (tried for real, then removed: permissions alone do not tell, e.g.
    under ``/proc``). Nothing is left behind; missing folders are created when writing.
    """
    path = path.expanduser()
    if path.is_dir():
        raise CLIError(f"cannot write {what} {path}: it is a directory")
    if path.exists() and not os.access(path, os.W_OK):
        raise CLIError(f"cannot write {what} {path}: permission denied")
    parent = path.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CLIError(f"cannot write {what} {path}: {parent} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".optuna-bocr-probe-")
    except OSError as e:
        raise CLIError(f"cannot write {what} {path}: {e.strerror or first_line(e)}") from e
    os.close(fd)
    os.unlink(probe)


def require_module(module: str, extra: str, what: str) -> None:
    """Refuse ``what`` when ``module`` cannot be imported, naming the extra that brings it."""
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise CLIError(
            f"{what} needs the {module} package, which is not installed: "
            f"pip install 'optuna-bocr[{extra}]'"
        ) from e


def load_study_or_none(
    storage: optuna.storages.BaseStorage, name: str
) -> optuna.study.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def make_objective(
    splits: Any,
    model: Any,
    device: Any,
    *,
    flops_ratio: float,
    budget_rule: str,
    lbound: float,
    rbound: float,
    calibration_images: int,
    points_per_layer: int,
    seed: int,
) -> Any:
    """The :class:`~optuna_bocr.pruning.PruningObjective` of ``model`` on ``splits``."""
    from optuna_bocr.pruning import PruningObjective

    try:
        return PruningObjective(
            model,
            calibration=splits.train,
            validation=splits.val,
            flops_ratio=flops_ratio,
            budget_rule=budget_rule,  # type: ignore[arg-type]
            lbound=lbound,
            rbound=rbound,
            device=device,
            n_calibration_images=calibration_images,
            points_per_layer=points_per_layer,
            seed=seed,
        )
    except (ValueError, TypeError, FloatingPointError) as e:
        raise CLIError(first_line(e)) from e


def fmt_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"
