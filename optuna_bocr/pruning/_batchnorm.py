"""Batch-norm recalibration: re-estimate running statistics of a pruned network on images.

Pruning shifts the activations that every later batch norm normalises, so the running
statistics of the unpruned network no longer fit. Recalibration ("adaptive BN", EagleEye,
Li et al., ECCV 2020) re-estimates them by forward passes in train mode, under
:func:`torch.no_grad`, over a fixed set of images; weights and biases stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The batch-norm layers of ``model`` that keep running statistics, in module order."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, *, batch_size: int) -> nn.Module:
    """Re-estimate the running mean and variance of every batch norm of ``model``, in place.

    The statistics are reset and then averaged with equal weights over the batches of
    ``images`` (``momentum=None``): the result depends on the images and the weights only,
    not on the statistics before. Only the batch norms run in train mode; every module's
    mode and every batch norm's momentum are restored afterwards. Parameters are untouched.

    Args:
        model: The network (on the device of ``images``).
        images: The calibration images, ``(N, C, H, W)``, in batches of ``batch_size``.
        batch_size: Images per forward pass (the last batch may be smaller).

    Returns:
        ``model``.

    Raises:
        ValueError: ``model`` has no batch norm with running statistics, or no images.
    """
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(
            "The model has no batch-norm layer with running statistics to recalibrate."
        )
    if images.shape[0] == 0 or batch_size < 1:
        raise ValueError("Batch-norm recalibration needs at least one image and batch_size >= 1.")
    modes = [(m, m.training) for m in model.modules()]
    momenta = [bn.momentum for bn in layers]
    try:
        model.eval()
        for bn in layers:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                model(images[start : start + batch_size])
    finally:
        for bn, momentum in zip(layers, momenta, strict=True):
            bn.momentum = momentum
        for module, training in modes:
            module.training = training
    return model


@contextlib.contextmanager
def kept_batchnorm_statistics(model: nn.Module) -> Iterator[None]:
    """Context manager: the running statistics of ``model``'s batch norms are restored on exit."""
    layers = batchnorm_layers(model)
    saved = [
        (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
        for bn in layers
        if bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_batches_tracked is not None
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for bn, (mean, var, count) in zip(layers, saved, strict=True):
                bn.running_mean.copy_(mean)  # type: ignore[union-attr]
                bn.running_var.copy_(var)  # type: ignore[union-attr]
                bn.num_batches_tracked.copy_(count)  # type: ignore[union-attr]
