"""Networks shipped with optuna-bocr, built by name, and checkpoint loading.

CIFAR ResNets follow the module layout of the widely used public CIFAR-10 checkpoints, so
those load with :func:`load_checkpoint`; MobileNetV1 is the common CIFAR variant; any
torchvision classification model is available as ``"torchvision:<name>"``; the user's own
network comes from a factory named ``"package.module:factory"`` or ``"path/file.py:factory"``
(:func:`build_user_model`).
"""

from __future__ import annotations

from optuna_bocr.models._cifar_resnet import BasicBlock
from optuna_bocr.models._cifar_resnet import cifar_resnet
from optuna_bocr.models._cifar_resnet import CifarResNet
from optuna_bocr.models._cifar_resnet import resnet20
from optuna_bocr.models._cifar_resnet import resnet32
from optuna_bocr.models._cifar_resnet import resnet44
from optuna_bocr.models._cifar_resnet import resnet56
from optuna_bocr.models._cifar_resnet import resnet110
from optuna_bocr.models._cifar_resnet import ShortcutA
from optuna_bocr.models._factory import build_user_model
from optuna_bocr.models._factory import is_factory_spec
from optuna_bocr.models._factory import load_factory
from optuna_bocr.models._factory import ModelSpecError
from optuna_bocr.models._factory import normalize_spec
from optuna_bocr.models._factory import parse_model_kwargs
from optuna_bocr.models._mobilenet import DepthwiseSeparable
from optuna_bocr.models._mobilenet import mobilenet_v1
from optuna_bocr.models._mobilenet import MobileNetV1
from optuna_bocr.models._registry import build_model
from optuna_bocr.models._registry import load_checkpoint
from optuna_bocr.models._registry import model_names

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "DepthwiseSeparable",
    "MobileNetV1",
    "ModelSpecError",
    "ShortcutA",
    "build_model",
    "build_user_model",
    "cifar_resnet",
    "is_factory_spec",
    "load_checkpoint",
    "load_factory",
    "mobilenet_v1",
    "model_names",
    "normalize_spec",
    "parse_model_kwargs",
    "resnet110",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
]
