"""Model names understood by the command line, and checkpoint loading."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
import os
import pickle
from typing import Any

import torch
from torch import nn

from optuna_bocr.models._cifar_resnet import resnet20
from optuna_bocr.models._cifar_resnet import resnet32
from optuna_bocr.models._cifar_resnet import resnet44
from optuna_bocr.models._cifar_resnet import resnet56
from optuna_bocr.models._cifar_resnet import resnet110
from optuna_bocr.models._mobilenet import mobilenet_v1

TORCHVISION_PREFIX = "torchvision:"

_SHIPPED: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "mobilenet_v1": mobilenet_v1,
}

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")
_PREFIXES = ("module.", "_orig_mod.")


def model_names() -> list[str]:
    """Names of the models shipped with this package (torchvision ones are not listed)."""
    return list(_SHIPPED)


def build_model(
    name: str, *, num_classes: int = 10, in_channels: int = 3, seed: int | None = None
) -> nn.Module:
    """Build a randomly initialised network by name.

    Args:
        name:
            ``"resnet20"``, ``"resnet32"``, ``"resnet44"``, ``"resnet56"``, ``"resnet110"``,
            ``"mobilenet_v1"``, or ``"torchvision:<name>"`` for any classification model of
            :func:`torchvision.models.list_models` (e.g. ``"torchvision:resnet18"``). For
            torchvision models the first convolution is rebuilt when ``in_channels != 3``.
        num_classes:
            Output classes.
        in_channels:
            Input image channels.
        seed:
            Seed of the initial weights: the same seed gives the same network. The global
            torch RNG is left as it was. :obj:`None` draws them from the global torch RNG.

    Returns:
        The network, in training mode, on the CPU.

    Raises:
        ValueError: For an unknown name.
    """
    if seed is None:
        return _build(name, num_classes=num_classes, in_channels=in_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(name, num_classes=num_classes, in_channels=in_channels)


def _build(name: str, *, num_classes: int, in_channels: int) -> nn.Module:
    if name in _SHIPPED:
        return _SHIPPED[name](num_classes=num_classes, in_channels=in_channels)
    if name.startswith(TORCHVISION_PREFIX):
        import torchvision

        tv_name = name[len(TORCHVISION_PREFIX) :]
        available = torchvision.models.list_models(module=torchvision.models)
        if tv_name not in available:
            raise ValueError(
                f"Unknown torchvision classification model {tv_name!r}; "
                f"see torchvision.models.list_models()."
            )
        model = torchvision.models.get_model(tv_name, weights=None, num_classes=num_classes)
        if in_channels != 3:
            _replace_first_conv(model, in_channels)
        return model
    raise ValueError(
        f"Unknown model {name!r}; choose one of {', '.join(_SHIPPED)} "
        f"or 'torchvision:<name>' (e.g. torchvision:resnet18)."
    )


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    for qualname, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                raise ValueError(f"Cannot adapt grouped first convolution {qualname!r}.")
            new = nn.Conv2d(
                in_channels,
                module.out_channels,
                module.kernel_size,  # type: ignore[arg-type]
                stride=module.stride,  # type: ignore[arg-type]
                padding=module.padding,  # type: ignore[arg-type]
                dilation=module.dilation,  # type: ignore[arg-type]
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
            parent_name, _, attr = qualname.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, new)
            return
    raise ValueError("The model has no Conv2d layer to adapt to in_channels.")


def _unwrap(obj: Any) -> Mapping[str, torch.Tensor]:
    for _ in range(4):
        if isinstance(obj, nn.Module):
            return obj.state_dict()
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], (Mapping, nn.Module)):
                obj = obj[key]
                break
        else:
            break
    raise ValueError(
        "Checkpoint holds no state dict: expected a mapping of tensors, optionally wrapped "
        f"as {{'state_dict': ...}} or {{'model': ...}} (found {type(obj).__name__}"
        + (f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else "")
        + ")."
    )


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(state)
    changed = True
    while changed and out:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix) :]: v for k, v in out.items()}
                changed = True
    return out


def load_checkpoint(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    *,
    strict: bool = True,
) -> nn.Module:
    """Load weights into ``model`` from a file or an in-memory checkpoint.

    Accepted forms: a raw state dict; a dict wrapping it under ``"state_dict"``, ``"model"``,
    ``"model_state_dict"`` or ``"net"`` (other entries such as ``"best_prec1"`` are ignored);
    keys prefixed with ``"module."`` (``nn.DataParallel``) or ``"_orig_mod."``
    (``torch.compile``). Files are read with ``torch.load(..., weights_only=True)``.

    Args:
        model:
            Network whose layout matches the checkpoint.
        path_or_state_dict:
            Path of a file written by :func:`torch.save`, or the loaded object.
        strict:
            Require the keys to match exactly (as :meth:`torch.nn.Module.load_state_dict`).

    Returns:
        ``model``, with the weights loaded.

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: When the file is not a checkpoint or does not fit the model.
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        path = os.fspath(path_or_state_dict)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        try:
            obj: Any = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"Cannot read checkpoint {path}: {first}") from e
    else:
        obj = path_or_state_dict
    state = _strip_prefixes(_unwrap(obj))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        raise ValueError(
            "Checkpoint does not match the model: "
            f"{len(missing)} missing key(s) {missing[:4]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:4]}."
        )
    bad = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if bad:
        raise ValueError(f"Checkpoint shapes do not match the model: {'; '.join(bad[:4])}.")
    model.load_state_dict(state, strict=strict)
    return model
