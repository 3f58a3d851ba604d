"""Multiply-accumulates (FLOPs) of conv and linear layers, and the budget rules."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
import math

import numpy as np
import torch
from torch import nn

from optuna_bocr.pruning._graph import ConvInfo
from optuna_bocr.pruning._graph import measure_layers
from optuna_bocr.pruning._graph import PrunableLayer


def count_flops(model: nn.Module, input_size: Sequence[int]) -> int:
    """Count the multiply-accumulates of the ``Conv2d`` and ``Linear`` layers of a model.

    This is the convention of the pruning papers (AMC, BOCR): batch norms, activations,
    pooling and additions are not counted; a convolution costs
    ``H_out * W_out * kh * kw * c_out * c_in / groups`` and a linear layer
    ``in_features * out_features``.

    Args:
        model: The network. It is run once in eval mode on zeros (its mode is restored).
        input_size: Shape of one input sample, ``(C, H, W)`` (a leading batch dimension of
            1 is accepted too).

    Returns:
        Multiply-accumulates for one sample.
    """
    size = tuple(int(s) for s in input_size)
    if len(size) == 4 and size[0] == 1:
        size = size[1:]
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"input_size must be (C, H, W) with positive sizes, got {input_size}.")
    try:
        parameter = next(model.parameters())
        device, dtype = parameter.device, parameter.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    was_training = model.training
    model.eval()
    try:
        infos = measure_layers(model, torch.zeros((1, *size), device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return sum(info.macs for info in infos.values())


def keep_count(channels: int, ratio: float) -> int:
    """Channels kept for a preserve ratio: ``ratio * channels`` rounded half up, at least 1."""
    return max(1, min(channels, math.floor(channels * ratio + 0.5)))


_SCALE_TOLERANCE = 1e-9
"""Relative factor below which the scaling rule treats two factors as the same."""


class BudgetModel:
    """Predicts FLOPs and parameters of a pruned network and applies the budget rule.

    Args:
        infos: Every ``Conv2d``/``Linear`` of the network (from ``measure_layers``).
        layers: The prunable layers, in the order the budget decides them.
        batchnorm_affine: Name -> whether it is affine, for every ``BatchNorm2d``.
        total_params: Parameter count of the unpruned network.
    """

    def __init__(
        self,
        infos: Mapping[str, ConvInfo],
        layers: Sequence[PrunableLayer],
        batchnorm_affine: Mapping[str, bool],
        total_params: int,
    ) -> None:
        self._infos = dict(infos)
        self._layers = list(layers)
        self._batchnorm_affine = dict(batchnorm_affine)
        self.original_params = int(total_params)
        self.original_flops = sum(info.macs for info in self._infos.values())
        # For every affected conv: which layer controls its inputs / outputs / both.
        self._in_owner: dict[str, str] = {}
        self._out_owner: dict[str, str] = {}
        self._dw_owner: dict[str, str] = {}
        for layer in self._layers:
            self._in_owner[layer.name] = layer.name
            self._out_owner[layer.producer] = layer.name
            for dw in layer.depthwise:
                self._dw_owner[dw] = layer.name
        self._affected = sorted(
            set(self._in_owner) | set(self._out_owner) | set(self._dw_owner),
            key=list(self._infos).index,
        )
        unaffected = [n for n in self._infos if n not in set(self._affected)]
        self._fixed_flops = sum(self._infos[n].macs for n in unaffected)

    def _conv_cost(self, name: str, keep: Mapping[str, int]) -> tuple[int, int]:
        info = self._infos[name]
        if name in self._dw_owner:
            k = keep[self._dw_owner[name]]
            weights = k * info.kernel_area
            return info.spatial * k, weights + (k if info.has_bias else 0)
        c_in = keep[self._in_owner[name]] if name in self._in_owner else info.in_channels
        c_out = keep[self._out_owner[name]] if name in self._out_owner else info.out_channels
        weights = c_out * (c_in // info.groups) * info.kernel_area
        return info.spatial * c_out * (c_in // info.groups), weights + (
            c_out if info.has_bias else 0
        )

    def flops(self, keep: Mapping[str, int]) -> int:
        """Predicted multiply-accumulates with ``keep[name]`` input channels per layer."""
        return self._fixed_flops + sum(self._conv_cost(n, keep)[0] for n in self._affected)

    def params(self, keep: Mapping[str, int]) -> int:
        """Predicted parameter count with ``keep[name]`` input channels per layer."""
        full = {layer.name: layer.channels for layer in self._layers}
        removed = 0
        for name in self._affected:
            removed += self._conv_cost(name, full)[1] - self._conv_cost(name, keep)[1]
        for layer in self._layers:
            for bn in layer.batchnorms:
                if self._batchnorm_affine.get(bn, False):
                    removed += 2 * (layer.channels - keep[layer.name])
        return self.original_params - removed

    def min_flops(self, lbound: float) -> int:
        """FLOPs with every layer at ``lbound``."""
        return self.flops(
            {layer.name: keep_count(layer.channels, lbound) for layer in self._layers}
        )

    def clip(
        self, ratios: Mapping[str, float], *, target: float, lbound: float
    ) -> dict[str, float]:
        """The AMC/BOCR budget rule ("action wall").

        Layers are decided in order. Each proposed ratio is clipped down so that, even if
        every later layer went to ``lbound``, the pruned FLOPs could still be at most
        ``target``; it is never clipped below ``lbound``.

        Args:
            ratios: Proposed preserve ratio per layer name.
            target: FLOPs budget (multiply-accumulates).
            lbound: Smallest ratio.

        Returns:
            The actual ratios, layer name -> ratio, in layer order.
        """
        keep = {layer.name: keep_count(layer.channels, lbound) for layer in self._layers}
        actual: dict[str, float] = {}
        for layer in self._layers:
            keep[layer.name] = 0
            base = self.flops(keep)
            keep[layer.name] = 1
            slope = self.flops(keep) - base
            ratio = float(ratios[layer.name])
            if slope > 0:
                k_max = math.floor((target - base) / slope)
                ratio = min(ratio, k_max / layer.channels)
            ratio = max(ratio, lbound)
            actual[layer.name] = ratio
            keep[layer.name] = keep_count(layer.channels, ratio)
        return actual

    def scale(
        self, ratios: Mapping[str, float], *, target: float, lbound: float, rbound: float = 1.0
    ) -> dict[str, float]:
        """The scaling budget rule: one factor for every ratio, as large as the budget allows.

        Every proposed ratio is multiplied by the largest factor ``s`` for which the network,
        each ratio kept in ``[lbound, rbound]``, stays within ``target``: a proposal over
        the budget shrinks, one under it grows, and the proportions between the layers stay
        as proposed (unlike :meth:`clip`, which cuts the last layers). Ratios that already
        use the budget this way (no larger factor fits) are returned as they are, so the
        rule leaves actual ratios unchanged.

        Args:
            ratios: Proposed preserve ratio per layer name, each in ``(0, rbound]``.
            target: FLOPs budget (multiply-accumulates), at least the FLOPs at ``lbound``.
            lbound: Smallest ratio.
            rbound: Largest ratio.

        Returns:
            The actual ratios, layer name -> ratio, in layer order.
        """
        names = [layer.name for layer in self._layers]
        proposed = np.array([float(ratios[n]) for n in names])

        def fits(factor: float) -> bool:
            scaled = np.clip(factor * proposed, lbound, rbound)
            return self.flops(self.keep(dict(zip(names, scaled.tolist(), strict=True)))) <= target

        if fits(1.0) and not fits(1.0 + _SCALE_TOLERANCE):
            return {n: float(r) for n, r in zip(names, proposed, strict=True)}
        lo, hi = 0.0, rbound / float(proposed.min())  # every ratio at lbound fits; at hi, rbound
        if fits(hi):
            lo = hi
        for _ in range(64):  # to the float resolution: lo * (1 + tolerance) no longer fits
            mid = 0.5 * (lo + hi)
            if fits(mid):
                lo = mid
            else:
                hi = mid
        actual = np.clip(lo * proposed, lbound, rbound)
        return {n: float(r) for n, r in zip(names, actual, strict=True)}

    def keep(self, ratios: Mapping[str, float]) -> dict[str, int]:
        """Kept input channels per layer for the given ratios."""
        return {
            layer.name: keep_count(layer.channels, ratios[layer.name]) for layer in self._layers
        }
