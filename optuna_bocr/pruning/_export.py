"""Physical channel surgery (torch-pruning) and saving / loading pruned networks.

File format (``save_pruned``): one :func:`torch.save` file holding a dict

``{"format": "optuna-bocr-pruned", "version": 1, "model": <the nn.Module>,
"metadata": {...}, "torch": <torch version>}``.

The whole module is pickled rather than a ``state_dict``, because the pruned layer shapes
differ from what the model's constructor builds: a state dict alone cannot be loaded
without re-running the surgery. Loading therefore needs the classes of the network to be
importable (torch and torchvision layers, :mod:`optuna_bocr.models`, or the user's own
module for a custom model) but not the pruning code or the study. A ``torch.export`` /
TorchScript program was not chosen as the main format: it could not be fine-tuned like a
module and fails on models with Python control flow; users who need a code-free artefact
can run ``torch.export.export(model, (example,))`` on the loaded module.
``load_pruned`` uses ``torch.load(..., weights_only=False)``: only load files you trust.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
import os
from typing import Any

import torch
from torch import nn
import torch_pruning as tp

from optuna_bocr.pruning._graph import build_graph
from optuna_bocr.pruning._graph import PrunableLayer

_FORMAT = "optuna-bocr-pruned"
_VERSION = 1


def prune_physically(
    model: nn.Module,
    example: torch.Tensor,
    layers: Sequence[PrunableLayer],
    kept: Mapping[str, torch.Tensor],
) -> nn.Module:
    """Remove the unkept input channels of each layer (and what they couple to), in place.

    Args:
        model: The network (weights of the consumers already reconstructed).
        example: One input batch for tracing.
        layers: The prunable layers.
        kept: Layer name -> sorted indices of the kept input channels.

    Returns:
        ``model``, now physically smaller.
    """
    graph = build_graph(model, example)
    modules = dict(model.named_modules())
    for layer in layers:
        keep = set(int(i) for i in kept[layer.name])
        removed = [i for i in range(layer.channels) if i not in keep]
        if not removed:
            continue
        group = graph.get_pruning_group(modules[layer.name], tp.prune_conv_in_channels, removed)
        group.prune()
    return model


def save_pruned(
    model: nn.Module, path: str | os.PathLike[str], *, metadata: dict[str, Any] | None = None
) -> None:
    """Save a (pruned) network with metadata (see the module docstring for the format).

    Args:
        model: The network to save (saved as it is, on its device).
        path: File to write.
        metadata: JSON-like extra information (ratios, accuracy, study name, ...).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model)!r}.")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata)!r}.")
    torch.save(
        {
            "format": _FORMAT,
            "version": _VERSION,
            "torch": torch.__version__,
            "model": model,
            "metadata": dict(metadata or {}),
        },
        path,
    )


def load_pruned(
    path: str | os.PathLike[str], *, map_location: str | torch.device | None = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a network written by :func:`save_pruned`.

    Args:
        path: The file.
        map_location: Where to put the tensors (default the CPU), as in :func:`torch.load`.

    Returns:
        The module (in eval mode) and its metadata.
    """
    payload = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not a file written by save_pruned.")
    if payload.get("version") != _VERSION:
        raise ValueError(
            f"{os.fspath(path)!r} has format version {payload.get('version')}, "
            f"this package reads version {_VERSION}."
        )
    model = payload["model"]
    if not isinstance(model, nn.Module):
        raise ValueError(f"{os.fspath(path)!r} does not hold a torch.nn.Module.")
    return model.eval(), dict(payload.get("metadata", {}))
