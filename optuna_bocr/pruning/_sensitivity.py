"""Per-layer sensitivity curves: each prunable layer pruned alone, measured on a few images.

The L1-importance densities of a layer's channels say little about how much accuracy the
network loses when that layer is pruned; the loss itself does. This probe prunes each
prunable layer alone to a few preserve ratios (every other layer keeps all its channels, no
FLOPs budget), with the same channel selection and least-squares reconstruction as the
search, and measures it on a small, fixed subset of the validation split: the top-1 accuracy
lost, and how far the pruned network's predictions moved from the unpruned network's (the
mean Kullback-Leibler divergence between their softmax outputs on the same images). The
divergence at each ratio is a feature vector per layer that :class:`~optuna_bocr.BOCRSampler`
can cluster on (distance ``"st"``). Unlike the accuracy lost, it is measured image by image
against the unpruned network, so it resolves mild pruning on a hundred images, where one
image is a whole point of accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import math
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from torch.utils.data import Subset
from tqdm.auto import tqdm

from optuna_bocr.pruning._inputs import collect
from optuna_bocr.pruning._objective import PruningObjective
from optuna_bocr.sampler import ParameterFeatures
from optuna_bocr.training._device import autocast_dtype

DEFAULT_PROBE_RATIOS = (0.1, 0.25, 0.5, 0.75)
"""Preserve ratios at which each layer is probed."""
DIVERGENCE_FLOOR = 1e-3
"""Nats added to each divergence before its logarithm in :meth:`LayerSensitivity.features`:
changes of the predictions much smaller than this count as none."""


@dataclass(frozen=True)
class LayerSensitivity:
    """Accuracy lost when each prunable layer is pruned alone.

    Attributes:
        ratios: The probed preserve ratios, ``(r,)``.
        drops: Layer name -> ``(r,)`` array of top-1 points lost at each ratio (unpruned
            top-1 on the probe images minus the pruned one; may be slightly negative).
        divergences: Layer name -> ``(r,)`` array of the mean KL divergence (nats) from the
            unpruned network's softmax output to the pruned one's, over the probe images.
        baseline_top1: Top-1 (%) of the unpruned network on the probe images.
        n_images: Number of validation images the probe measured on.
        n_evaluations: Number of pruned evaluations (layers x ratios, plus the unpruned one).
        seconds: Wall-clock seconds of the whole probe (feature capture included).
    """

    ratios: tuple[float, ...]
    drops: dict[str, np.ndarray]
    divergences: dict[str, np.ndarray]
    baseline_top1: float
    n_images: int
    n_evaluations: int
    seconds: float

    def features(self, measure: str = "divergence") -> ParameterFeatures:
        """The curves as structural feature vectors (use ``distance="st"``).

        Args:
            measure: ``"divergence"``: ``log(divergence + DIVERGENCE_FLOOR)``, so that the
                thousandths of a nat of mild ratios count next to the nats of harsh ones.
                ``"top1"``: the points lost, clipped at 0 (a layer that gains accuracy when
                pruned is as insensitive as one that loses none) and compressed by
                ``log1p``.

        Raises:
            ValueError: For another ``measure``.
        """
        if measure == "divergence":
            return ParameterFeatures(
                vectors={n: np.log(d + DIVERGENCE_FLOOR) for n, d in self.divergences.items()}
            )
        if measure == "top1":
            return ParameterFeatures(
                vectors={n: np.log1p(np.clip(d, 0.0, None)) for n, d in self.drops.items()}
            )
        raise ValueError(f"measure must be 'divergence' or 'top1', got {measure!r}.")

    def cost_in_evaluations(self, full_validation_images: int) -> float:
        """The probe's cost in full evaluations of ``full_validation_images`` images.

        Charge this to the search budget when comparing with samplers that need no probe.
        """
        if full_validation_images < 1:
            raise ValueError(f"full_validation_images must be >= 1, got {full_validation_images}.")
        return self.n_evaluations * self.n_images / full_validation_images


def layer_sensitivity(
    model: nn.Module,
    *,
    calibration: Dataset,
    validation: Dataset,
    ratios: Sequence[float] = DEFAULT_PROBE_RATIOS,
    n_images: int = 1000,
    n_calibration_images: int = 3000,
    device: str | torch.device = "auto",
    autocast: bool = False,
    seed: int = 0,
    batch_size: int = 500,
    show_progress_bar: bool = False,
) -> LayerSensitivity:
    """Prune each prunable layer alone to each of ``ratios`` and measure what it changes.

    Args:
        model: The trained network (left untouched).
        calibration: Training images for the least-squares reconstruction (as for
            :class:`~optuna_bocr.pruning.PruningObjective`).
        validation: The validation split; its first ``n_images`` images are used.
        ratios: Preserve ratios to probe, each in ``(0, 1)``.
        n_images: Validation images per evaluation.
        n_calibration_images: Calibration images of the feature capture.
        device: ``"auto"`` or a torch device.
        autocast: Evaluate under :func:`torch.autocast`.
        seed: Seed of the calibration subset and sampled positions.
        batch_size: Images per forward pass.
        show_progress_bar: Show a tqdm bar over the layers.

    Returns:
        The curves (accuracy lost and divergence), the unpruned accuracy on the probe images
        and the probe's cost.

    Raises:
        ValueError: No ratio, a ratio outside ``(0, 1)``, or ``n_images < 1``.
    """
    probe = tuple(float(r) for r in ratios)
    if not probe or any(not (0.0 < r < 1.0) or not math.isfinite(r) for r in probe):
        raise ValueError(
            f"ratios must be a non-empty sequence of values in (0, 1), got {ratios!r}."
        )
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"n_images must be an int >= 1, got {n_images!r}.")
    start = time.perf_counter()
    subset = Subset(validation, range(min(n_images, len(validation))))  # type: ignore[arg-type]
    objective = PruningObjective(
        model,
        calibration=calibration,
        validation=subset,
        flops_ratio=1.0,  # no budget: each layer alone gets exactly the probed ratio
        budget_rule="wall",
        lbound=min(probe),
        rbound=1.0,
        device=device,
        n_calibration_images=n_calibration_images,
        report_every=None,
        autocast=autocast,
        seed=seed,
    )
    images, labels = collect(subset, "validation", objective.device, None, seed)
    batches = [
        (images[i : i + batch_size].to(objective.device), labels[i : i + batch_size])
        for i in range(0, len(images), batch_size)
    ]

    def outputs(ratios: dict[str, float]) -> tuple[float, torch.Tensor]:
        """Top-1 (%) and log-softmax outputs ``(n, classes)`` of the pruned network."""
        dtype = autocast_dtype(objective.device)
        with objective.masked(ratios) as net, torch.inference_mode():
            with torch.autocast(objective.device.type, dtype=dtype, enabled=autocast):
                logits = torch.cat([net(x) for x, _ in batches])
        log_p = logits.float().log_softmax(dim=1).cpu()
        return 100.0 * float((log_p.argmax(dim=1) == labels).float().mean()), log_p

    names = objective.layer_names
    full = dict.fromkeys(names, 1.0)
    baseline, log_p0 = outputs(full)
    p0 = log_p0.exp()
    drops: dict[str, np.ndarray] = {}
    divergences: dict[str, np.ndarray] = {}
    for name in tqdm(names, desc="sensitivity", disable=not show_progress_bar):
        top1s, kls = [], []
        for r in probe:
            top1, log_p = outputs({**full, name: r})
            top1s.append(baseline - top1)
            kls.append(max(float((p0 * (log_p0 - log_p)).sum(dim=1).mean()), 0.0))
        drops[name], divergences[name] = np.array(top1s), np.array(kls)
    return LayerSensitivity(
        ratios=probe,
        drops=drops,
        divergences=divergences,
        baseline_top1=baseline,
        n_images=len(subset),
        n_evaluations=1 + len(names) * len(probe),
        seconds=time.perf_counter() - start,
    )
