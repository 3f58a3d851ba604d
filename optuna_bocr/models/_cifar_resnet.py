"""CIFAR ResNets (He et al. 2016, section 4.2) with option-A shortcuts.

The module layout (``conv1``, ``bn1``, ``layer1.0.conv1`` ... ``linear``) matches the widely
used public CIFAR-10 checkpoints (akamaster/pytorch_resnet_cifar10), so their state dicts load
with :func:`~optuna_bocr.models.load_checkpoint`.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

_DEPTHS = (20, 32, 44, 56, 110)


class ShortcutA(nn.Module):
    """Parameter-free shortcut: stride-2 subsampling and zero padding of the channels.

    Args:
        in_planes:
            Channels of the input.
        planes:
            Channels of the output (``>= in_planes``); the extra channels are zeros, split
            evenly before and after the input channels.
        stride:
            Spatial subsampling step.
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        if planes < in_planes:
            raise ValueError(f"ShortcutA cannot shrink channels ({in_planes} -> {planes}).")
        self.in_planes = in_planes
        self.planes = planes
        self.stride = stride
        self.pad_before = (planes - in_planes) // 2
        self.pad_after = planes - in_planes - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after), "constant", 0.0)

    def extra_repr(self) -> str:
        return f"{self.in_planes}, {self.planes}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity or option-A shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride != 1 or in_planes != planes:
            self.shortcut = ShortcutA(in_planes, planes, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: a 16-channel stem, three stages of 16/32/64 channels.

    Args:
        num_blocks:
            Number of basic blocks in each of the three stages.
        num_classes:
            Output classes of the final linear layer.
        in_channels:
            Channels of the input images.
    """

    def __init__(
        self, num_blocks: tuple[int, int, int], *, num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, in_channels=in_channels)
        self.in_planes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(32, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(64, num_blocks[2], stride=2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}.")


def cifar_resnet(depth: int, *, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """Build a CIFAR ResNet of the given depth (6n + 2 layers).

    Args:
        depth:
            One of 20, 32, 44, 56, 110.
        num_classes:
            Output classes.
        in_channels:
            Input image channels (3 for CIFAR-10, 1 for Fashion-MNIST).

    Returns:
        The randomly initialised network.

    Raises:
        ValueError: For an unsupported depth.
    """
    if depth not in _DEPTHS:
        raise ValueError(f"CIFAR ResNet depth must be one of {_DEPTHS}, got {depth!r}.")
    n = (depth - 2) // 6
    return CifarResNet((n, n, n), num_classes=num_classes, in_channels=in_channels)


def resnet20(*, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-20 (about 0.27 M parameters)."""
    return cifar_resnet(20, num_classes=num_classes, in_channels=in_channels)


def resnet32(*, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-32 (about 0.46 M parameters)."""
    return cifar_resnet(32, num_classes=num_classes, in_channels=in_channels)


def resnet44(*, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-44 (about 0.66 M parameters)."""
    return cifar_resnet(44, num_classes=num_classes, in_channels=in_channels)


def resnet56(*, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-56 (about 0.85 M parameters)."""
    return cifar_resnet(56, num_classes=num_classes, in_channels=in_channels)


def resnet110(*, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-110 (about 1.7 M parameters)."""
    return cifar_resnet(110, num_classes=num_classes, in_channels=in_channels)
