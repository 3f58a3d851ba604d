"""The one evaluation loop of the CNN side: top-1 and top-5 accuracy over batches.

:func:`evaluate` (a model on a dataset) and :class:`~optuna_bocr.pruning.PruningObjective`
(a pruned network on validation images held on the device) both count with
:func:`accuracy`, so they share one top-5 rule and one error for non-finite outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset

from optuna_bocr.data import ImageTensorDataset
from optuna_bocr.training._device import autocast_dtype
from optuna_bocr.training._device import resolve_device

TOP_K = 5
"""Top-5 accuracy counts a label among the ``min(5, classes)`` largest logits as a hit (so it
is 100% for a model with 5 classes or fewer)."""


def accuracy(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    autocast: bool = False,
    what: str = "the evaluation data",
    on_batch: Callable[[int, int, torch.Tensor], None] | None = None,
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (%) of ``model`` over ``(images, labels)`` batches.

    The model runs as it is (its mode is left alone) under :func:`torch.inference_mode`.
    Hits are counted on the device, so nothing waits for the device between batches unless
    ``on_batch`` reads the count.

    Args:
        model: The classifier, on ``device``.
        batches: ``(images, labels)`` pairs; both are moved to ``device``.
        device: Where the model runs.
        autocast: Run under :func:`torch.autocast` in the dtype of :func:`autocast_dtype`
            (bfloat16; float16 on a GPU without bfloat16).
        what: Names the data in the error message.
        on_batch: Called after every batch with ``(step, images seen, top-1 hits so far)``
            (the hits as a 0-dim tensor on the device); it may raise to stop early.

    Returns:
        ``(top1, top5)`` in percent (top-5 as described by :data:`TOP_K`).

    Raises:
        FloatingPointError: When the model outputs NaN or infinity.
        ValueError: When ``batches`` holds no image.
    """
    correct1 = torch.zeros((), dtype=torch.long, device=device)
    correct5 = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    dtype = autocast_dtype(device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=autocast):
        for step, (x, y) in enumerate(batches):
            y = torch.as_tensor(y).to(device)
            logits = model(x.to(device))
            if not bool(torch.isfinite(logits).all()):
                raise FloatingPointError(f"The model produced NaN or infinite outputs on {what}.")
            hits = logits.topk(min(TOP_K, logits.shape[1]), dim=1).indices == y[:, None]
            correct1 += hits[:, 0].sum()
            correct5 += hits.any(dim=1).sum()
            seen += int(y.shape[0])
            if on_batch is not None:
                on_batch(step, seen, correct1)
    if seen == 0:
        raise ValueError(f"{what} holds no image.")
    return 100.0 * int(correct1) / seen, 100.0 * int(correct5) / seen


def check_dataset(dataset: Dataset, what: str) -> int:
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError as e:
        raise ValueError(f"The {what} dataset must have a length.") from e
    if n == 0:
        raise ValueError(f"The {what} dataset is empty.")
    return n


def _dataset_batches(
    dataset: Dataset, batch_size: int, dev: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(dataset, ImageTensorDataset):
        for i in range(0, len(dataset), batch_size):
            images = dataset.images[i : i + batch_size].to(dev)
            yield dataset.normalize(images), dataset.labels[i : i + batch_size]
    else:
        for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            yield x, torch.as_tensor(y)


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 1000,
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (%) of ``model`` on ``dataset``.

    The model is moved to ``device`` and evaluated in eval mode; its training flag is
    restored afterwards. Top-5 follows :data:`TOP_K` (100 with 5 classes or fewer).

    Args:
        model:
            The classifier.
        dataset:
            Items ``(image, label)``. An :class:`~optuna_bocr.data.ImageTensorDataset` is
            batched directly from its tensors; any other dataset through a ``DataLoader``.
        device:
            ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ...
        batch_size:
            Images per forward pass.

    Returns:
        ``(top1, top5)`` in percent.

    Raises:
        ValueError: For an empty dataset or an unknown device.
        FloatingPointError: When the model outputs NaN or infinity.
    """
    check_dataset(dataset, "evaluation")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    dev = resolve_device(device)
    was_training = model.training
    model.to(dev).eval()
    try:
        return accuracy(model, _dataset_batches(dataset, batch_size, dev), device=dev)
    finally:
        model.train(was_training)
