"""The network under pruning: its prunable layers, its FLOPs budget, and its pruned versions.

A pruned version is either the network itself with masked consumer weights swapped in for
a moment (:meth:`PrunableNetwork.masked`) or a physically smaller copy
(:meth:`PrunableNetwork.pruned`); both get their batch norms recalibrated when asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Mapping
import contextlib
import copy
import math

import numpy as np
import torch
from torch import nn

from optuna_bocr.pruning._batchnorm import kept_batchnorm_statistics
from optuna_bocr.pruning._batchnorm import recalibrate_batchnorm
from optuna_bocr.pruning._export import prune_physically
from optuna_bocr.pruning._flops import BudgetModel
from optuna_bocr.pruning._graph import classify_layers
from optuna_bocr.pruning._graph import ConvInfo
from optuna_bocr.pruning._graph import measure_layers
from optuna_bocr.pruning._graph import PrunableLayer
from optuna_bocr.sampler import ParameterFeatures


class PrunableNetwork:
    """A classifier's prunable layers and FLOPs budget, found by running it on one example.

    Args:
        model: The network, on its device, in eval mode, without gradients; owned by this
            object (weights and statistics are changed temporarily by :meth:`masked`).
        example: One input batch on the model's device.
        flops_ratio: The budget, as a fraction of the unpruned FLOPs.
        lbound: Smallest preserve ratio.

    Raises:
        ValueError: The model cannot run on the example, does not return ``(batch,
            classes)`` logits, has no prunable layer, or cannot meet the budget.
    """

    def __init__(
        self, model: nn.Module, example: torch.Tensor, *, flops_ratio: float, lbound: float
    ) -> None:
        self.model = model
        self.example = example
        try:
            self.infos: dict[str, ConvInfo] = measure_layers(model, example)
            logits = model(example)
        except (RuntimeError, ValueError) as e:
            raise ValueError(
                f"The model cannot run on images of shape {tuple(example.shape[1:])}: {e}"
            ) from e
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise ValueError("The model must return a (batch, classes) tensor of logits.")
        self.num_classes = int(logits.shape[1])
        self.layers: list[PrunableLayer]
        self.layers, reasons = classify_layers(model, example, list(self.infos))
        if not self.layers:
            considered = "; ".join(f"{n}: {r}" for n, r in reasons.items()) or "none"
            raise ValueError(
                "The model has no prunable layer (a Conv2d whose input channels can be "
                "removed by removing only the output channels of one producing Conv2d). "
                f"Layers considered: {considered}."
            )
        modules = dict(model.named_modules())
        self.convs: dict[str, nn.Conv2d] = {
            layer.name: modules[layer.name] for layer in self.layers
        }
        affine = {
            name: bool(m.affine)
            for name, m in modules.items()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
        }
        self.original_params = sum(p.numel() for p in model.parameters())
        self.budget = BudgetModel(self.infos, self.layers, affine, self.original_params)
        self.original_flops: int = self.budget.original_flops
        self.target = flops_ratio * self.original_flops
        min_flops = self.budget.min_flops(lbound)
        if min_flops > self.target:
            raise ValueError(
                f"flops_ratio={flops_ratio} cannot be met: with every prunable layer at "
                f"lbound={lbound} the model keeps {min_flops / self.original_flops:.3f} "
                f"of its FLOPs. Raise flops_ratio or lower lbound."
            )

    def check_ratios(self, ratios: Mapping[str, float], lbound: float, rbound: float) -> None:
        """Refuse anything but one finite ratio in ``[lbound, rbound]`` per prunable layer.

        Raises:
            TypeError: ``ratios`` is not a mapping.
            ValueError: Missing, unknown or out-of-range ratios.
        """
        if not isinstance(ratios, Mapping):
            raise TypeError(
                f"ratios must be a mapping of layer name -> ratio, got {type(ratios)!r}."
            )
        names = {layer.name for layer in self.layers}
        missing = names - set(ratios)
        unknown = set(ratios) - names
        if missing or unknown:
            raise ValueError(
                f"ratios must have one value per prunable layer; missing {sorted(missing)}, "
                f"unknown {sorted(unknown)}."
            )
        for name, value in ratios.items():
            v = float(value)
            if not math.isfinite(v) or not (lbound <= v <= rbound):
                raise ValueError(
                    f"Ratio of {name!r} is {value}, outside [lbound, rbound] = "
                    f"[{lbound}, {rbound}]."
                )

    def features(self, importance: Mapping[str, torch.Tensor]) -> ParameterFeatures:
        """Per-layer features: channel importances as samples, the layer's shape as vector.

        Args:
            importance: Layer name -> importance of each input channel.

        Returns:
            ``samples``: ``importance``; ``vectors``: ``(c_in, c_out, kernel area, params,
            FLOPs, output size, c_in / c_out)`` of the layer (FLOPs as multiply-accumulates).
        """
        samples = {}
        vectors = {}
        for layer in self.layers:
            info = self.infos[layer.name]
            params = sum(p.numel() for p in self.convs[layer.name].parameters())
            samples[layer.name] = importance[layer.name].cpu().numpy().astype(np.float64)
            vectors[layer.name] = np.array(
                [
                    info.in_channels,
                    info.out_channels,
                    info.kernel_area,
                    params,
                    info.macs,
                    info.output_size,
                    info.in_channels / info.out_channels,
                ],
                dtype=np.float64,
            )
        return ParameterFeatures(samples=samples, vectors=vectors)

    @contextlib.contextmanager
    def masked(
        self,
        weights: Mapping[str, torch.Tensor],
        originals: Mapping[str, torch.Tensor],
        bn_images: torch.Tensor | None,
        bn_batch_size: int,
    ) -> Iterator[nn.Module]:
        """The network itself with ``weights`` swapped in (and batch norms recalibrated on
        ``bn_images`` when given); weights and statistics are restored exactly on exit."""
        with contextlib.ExitStack() as stack:
            if bn_images is not None:
                stack.enter_context(kept_batchnorm_statistics(self.model))
            try:
                with torch.no_grad():
                    for name, weight in weights.items():
                        self.convs[name].weight.copy_(weight)
                if bn_images is not None:
                    recalibrate_batchnorm(self.model, bn_images, batch_size=bn_batch_size)
                yield self.model
            finally:
                with torch.no_grad():
                    for name in weights:
                        self.convs[name].weight.copy_(originals[name])

    def pruned(
        self,
        weights: Mapping[str, torch.Tensor],
        kept: Mapping[str, torch.Tensor],
        bn_images: torch.Tensor | None,
        bn_batch_size: int,
    ) -> nn.Module:
        """A physically smaller copy with ``weights`` in the kept channels (and batch norms
        recalibrated on ``bn_images`` when given), in eval mode, without gradients."""
        model = copy.deepcopy(self.model)
        modules = dict(model.named_modules())
        with torch.no_grad():
            for name, weight in weights.items():
                modules[name].weight.copy_(weight)
        model = prune_physically(model, self.example, self.layers, kept)
        if bn_images is not None:
            recalibrate_batchnorm(model, bn_images, batch_size=bn_batch_size)
        return model.eval()
