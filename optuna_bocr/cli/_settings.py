"""Settings that several subcommands share: model and data, baseline training.

Each group is a frozen dataclass built once from the parsed arguments
(:meth:`DataSettings.from_args`) next to the function that declares its arguments, so an
option is added in one place.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from dataclasses import fields
from typing import Any

from optuna_bocr.cli._base import nonneg_float
from optuna_bocr.cli._base import positive_int


def json_object(text: str) -> dict[str, Any]:
    """Argument type: a JSON object."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({e.msg} at column {e.colno}): {text!r}"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f'expected a JSON object such as {{"width": 32}}, got {text!r}'
        )
    return value


def _pick(cls: type, args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    return {f.name: getattr(args, prefix + f.name) for f in fields(cls)}


@dataclass(frozen=True)
class DataSettings:
    """Which model and data, where, on which device."""

    model: str
    model_kwargs: dict[str, Any] | None
    dataset: str
    data_dir: str | None
    download: bool
    image_size: int
    seed: int
    device: str
    cache_dir: str | None
    quiet: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DataSettings:
        """The settings of :meth:`add_arguments`' options."""
        picked = _pick(cls, args)
        if ":" in picked["model"] and not picked["model"].startswith("torchvision:"):
            from optuna_bocr.models import normalize_spec

            picked["model"] = normalize_spec(picked["model"])
        picked["model_kwargs"] = picked["model_kwargs"] or None
        return cls(**picked)

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Declare the model and data options."""
        g = p.add_argument_group("model and data")
        g.add_argument(
            "--model",
            default="resnet20",
            help="resnet20, resnet32, resnet44, resnet56, resnet110, mobilenet_v1, "
            "torchvision:<name> (e.g. torchvision:resnet18), or your own network: "
            "package.module:factory or path/to/file.py:factory, any callable returning an "
            "nn.Module (default: %(default)s)",
        )
        g.add_argument(
            "--model-kwargs",
            type=json_object,
            default=None,
            metavar="JSON",
            help='keyword arguments of your factory, e.g. \'{"width": 32, "num_classes": 10}\'',
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
            type=positive_int,
            default=32,
            metavar="N",
            help="image side in pixels (Fashion-MNIST is zero-padded from 28) "
            "(default: %(default)s)",
        )
        g.add_argument(
            "--seed", type=int, default=0, help="seed of everything (default: %(default)s)"
        )
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


@dataclass(frozen=True)
class TrainSettings:
    """How a baseline is trained."""

    epochs: float
    images: int
    lr: float
    augment: bool
    batch_size: int
    autocast: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace, prefix: str = "") -> TrainSettings:
        """The settings of :meth:`add_arguments`' options (with the same ``prefix``)."""
        return cls(**_pick(cls, args, prefix.replace("-", "_")))

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser, prefix: str = "", *, epochs: float) -> None:
        """Declare the training options, named ``--<prefix>epochs`` and so on."""
        what = "baseline training, when no checkpoint is given or cached" if prefix else "training"
        g = p.add_argument_group(what)
        g.add_argument(
            f"--{prefix}epochs",
            type=nonneg_float,
            default=epochs,
            metavar="E",
            help="epochs (may be fractional) (default: %(default)s)",
        )
        g.add_argument(
            f"--{prefix}images",
            type=positive_int,
            default=30000,
            metavar="N",
            help="training images drawn per epoch (default: %(default)s; use a large number "
            "for full epochs)",
        )
        g.add_argument(
            f"--{prefix}lr",
            type=nonneg_float,
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
            type=positive_int,
            default=128,
            metavar="B",
            help="batch size (default: %(default)s)",
        )
        g.add_argument(
            f"--{prefix}autocast",
            action="store_true",
            help="mixed precision, channels-last (bfloat16; float16 on a GPU without it): "
            "faster on a CPU with bfloat16 units or a recent GPU (2.6x per ResNet-56 step on an "
            "AMX CPU)",
        )
