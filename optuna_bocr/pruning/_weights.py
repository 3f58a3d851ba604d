"""Which input channels each prunable layer keeps, and the weights they get.

Channels are chosen by L1 importance. Their weights are either refitted by least squares to
the unpruned layer's outputs on calibration features (captured once, see
:mod:`optuna_bocr.pruning._reconstruct`) or kept as they are (plain masking).
"""

from __future__ import annotations

from collections.abc import Mapping
import time

import optuna
import torch
from torch import nn

from optuna_bocr.pruning._reconstruct import FeatureCapture
from optuna_bocr.pruning._reconstruct import l1_importance
from optuna_bocr.pruning._reconstruct import reconstruct
from optuna_bocr.pruning._reconstruct import select_channels

_logger = optuna.logging.get_logger(__name__)

_CAPTURE_BATCH = 100


class ChannelWeights:
    """Kept channels and masked consumer weights of the prunable layers of one network.

    Args:
        model: The network (eval mode, on ``device``); only read.
        convs: Layer name -> consumer convolution of ``model``, in network order.
        calibration: Images for the least-squares reconstruction, or ``None`` for plain
            masking (the kept weights as they are; nothing is captured).
        points_per_layer: Random output positions sampled per image and layer.
        seed: Seed of the sampled positions.
        device: Where the captured features are computed.
    """

    def __init__(
        self,
        model: nn.Module,
        convs: Mapping[str, nn.Conv2d],
        *,
        calibration: torch.Tensor | None,
        points_per_layer: int,
        seed: int,
        device: torch.device,
    ) -> None:
        self._names = list(convs)
        self._channels = {name: conv.in_channels for name, conv in convs.items()}
        self.originals = {name: conv.weight.detach().clone() for name, conv in convs.items()}
        self.importance = {name: l1_importance(w) for name, w in self.originals.items()}
        self._last: tuple[tuple[int, ...], dict[str, torch.Tensor]] | None = None
        self._grams: dict[str, torch.Tensor] = {}
        self._targets: dict[str, torch.Tensor] = {}
        if calibration is None:
            return
        started = time.perf_counter()
        capture = FeatureCapture(convs, points_per_layer=points_per_layer, seed=seed)
        batches = (
            calibration[i : i + _CAPTURE_BATCH].to(device)
            for i in range(0, calibration.shape[0], _CAPTURE_BATCH)
        )
        self._grams = capture.run(model, batches)
        self._targets = {
            name: self._grams[name] @ w.reshape(w.shape[0], -1).T.to(torch.float64)
            for name, w in self.originals.items()
        }
        _logger.info(
            f"Captured features of {len(convs)} layers from {calibration.shape[0]} images "
            f"in {time.perf_counter() - started:.1f}s."
        )

    @property
    def reconstructs(self) -> bool:
        """Whether kept weights are refitted by least squares (else kept as they are)."""
        return bool(self._grams)

    def kept(self, keep: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """Sorted indices of the kept input channels of each layer, for channel counts."""
        return {
            name: select_channels(self.importance[name], keep[name]).cpu() for name in self._names
        }

    def masked(self, keep: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """Consumer weights of the original shape, zero in the pruned input channels.

        Args:
            keep: Layer name -> number of kept input channels.

        Returns:
            Layer name -> weight; layers that keep every channel are left out. The last
            result is cached (a trial asks for it more than once).
        """
        key = tuple(keep[name] for name in self._names)
        if self._last is not None and self._last[0] == key:
            return dict(self._last[1])
        out = {}
        for name in self._names:
            k = keep[name]
            if k >= self._channels[name]:
                continue
            kept = select_channels(self.importance[name], k)
            original = self.originals[name]
            if self.reconstructs:
                out[name] = reconstruct(self._grams[name], self._targets[name], original, kept)
            else:
                weight = torch.zeros_like(original)
                weight[:, kept.to(original.device)] = original[:, kept.to(original.device)]
                out[name] = weight
        self._last = (key, out)
        return dict(out)
