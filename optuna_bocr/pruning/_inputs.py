"""The objective's inputs: images and labels gathered as tensors, and the devices checked."""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset
from torch.utils.data import Subset

from optuna_bocr.pruning._batchnorm import batchnorm_layers
from optuna_bocr.training._device import same_device


def _iter_pairs(data: DataLoader | Dataset, what: str) -> Iterator[tuple[Any, Any]]:
    if isinstance(data, DataLoader):
        yield from data
    elif isinstance(data, Dataset):
        yield from DataLoader(data, batch_size=256, shuffle=False)
    else:
        raise TypeError(f"{what} must be a torch DataLoader or Dataset, got {type(data)!r}.")


def _split_batch(batch: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (list, tuple)) or len(batch) < 2:
        raise ValueError(f"{what} must yield (images, labels) pairs.")
    x, y = batch[0], batch[1]
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{what} must yield tensors, got {type(x)!r} and {type(y)!r}.")
    return x, torch.as_tensor(y)


def check_model_device(model: nn.Module, device: torch.device) -> None:
    """Refuse a model with parameters or buffers on an accelerator other than ``device``.

    Raises:
        ValueError: Naming both devices and what to pass instead.
    """
    devices = {t.device for t in list(model.parameters()) + list(model.buffers())}
    for dev in devices:
        if dev.type != "cpu" and not same_device(dev, device):
            raise ValueError(
                f"The model is on {dev} but the objective runs on {device}: move the "
                f"model to the CPU or to {device}, or pass device={str(dev)!r}."
            )


def check_data_device(x: torch.Tensor, device: torch.device, what: str) -> None:
    """Refuse data on an accelerator other than the objective's device (the CPU is fine).

    Raises:
        ValueError: Naming both devices and what to pass instead.
    """
    if x.device.type != "cpu" and not same_device(x.device, device):
        raise ValueError(
            f"{what} is on {x.device} but the objective runs on {device}: put the data on "
            f"the CPU or on {device}, or pass device={str(x.device)!r}."
        )


def collect(
    data: DataLoader | Dataset, what: str, device: torch.device, limit: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather images and labels on the CPU: all of them, or ``limit`` of them.

    A ``Dataset`` longer than ``limit`` gives a seeded random subset, a ``DataLoader`` its
    first ``limit`` images.

    Args:
        data: ``(images, labels)`` batches (a ``DataLoader``) or items (a ``Dataset``).
        what: Names the data in error messages.
        device: The objective's device (data elsewhere on an accelerator is refused).
        limit: Most images to take (``None``: all).
        seed: Seed of the random subset.

    Returns:
        ``(images (N, C, H, W) floating point, labels (N,) long)``.

    Raises:
        TypeError: Not a DataLoader or Dataset, or items that are not float tensors.
        ValueError: Empty data, items that are not pairs, images not ``(C, H, W)``, or
            data on another device.
    """
    if isinstance(data, Dataset) and not isinstance(data, DataLoader) and limit is not None:
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError:
            n = None
        if n is not None and n > limit:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit]
            data = Subset(data, order.tolist())
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    count = 0
    for batch in _iter_pairs(data, what):
        x, y = _split_batch(batch, what)
        check_data_device(x, device, what)
        if x.dim() == 3:
            x = x.unsqueeze(0)
            y = y.reshape(1)
        xs.append(x.detach().cpu())
        ys.append(y.detach().cpu().reshape(-1))
        count += x.shape[0]
        if limit is not None and count >= limit:
            break
    if count == 0:
        raise ValueError(f"{what} is empty.")
    images = torch.cat(xs)
    labels = torch.cat(ys)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if images.dim() != 4:
        raise ValueError(f"{what} images must be (C, H, W) tensors, got shape {images.shape[1:]}.")
    if not images.is_floating_point():
        raise TypeError(f"{what} images must be floating point tensors, got {images.dtype}.")
    return images, labels.long()


BUDGET_RULES = ("scale", "wall")
"""How requested ratios are made to meet the FLOPs budget (see ``PruningObjective``)."""


def check_arguments(
    model: object,
    *,
    flops_ratio: float,
    budget_rule: str,
    lbound: float,
    rbound: float,
    counts: Mapping[str, int],
    report_every: int | None,
    bn_recalibration: int,
) -> None:
    """Refuse ``PruningObjective``'s arguments, before any work, with what to pass instead.

    Args:
        counts: Argument name -> value, each a positive integer.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: Any other argument out of range.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model)!r}.")
    if not (0.0 < lbound <= rbound <= 1.0):
        raise ValueError(f"Need 0 < lbound <= rbound <= 1, got lbound={lbound}, rbound={rbound}.")
    if not (0.0 < flops_ratio <= 1.0):
        raise ValueError(f"flops_ratio must be in (0, 1], got {flops_ratio}.")
    if budget_rule not in BUDGET_RULES:
        raise ValueError(
            f"budget_rule must be one of {', '.join(map(repr, BUDGET_RULES))}, "
            f"got {budget_rule!r}."
        )
    for arg, value in counts.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{arg} must be a positive integer, got {value!r}.")
    if report_every is not None and (int(report_every) != report_every or report_every < 1):
        raise ValueError(f"report_every must be a positive integer or None, got {report_every!r}.")
    if isinstance(bn_recalibration, bool) or int(bn_recalibration) != bn_recalibration:
        raise ValueError(
            f"bn_recalibration must be a whole number of batches, got {bn_recalibration!r}."
        )
    if bn_recalibration < 0:
        raise ValueError(
            f"bn_recalibration must be >= 0 batches (0 turns it off), got {bn_recalibration}."
        )
    if bn_recalibration > 0 and not batchnorm_layers(model):
        raise ValueError(
            f"bn_recalibration={bn_recalibration} needs batch-norm layers with running "
            "statistics, and the model has none: pass bn_recalibration=0."
        )
