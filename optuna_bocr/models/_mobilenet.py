"""MobileNetV1 (Howard et al. 2017) for 32x32 inputs, as commonly used on CIFAR-10."""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

# Output channels and stride of the 13 depthwise-separable blocks.
_CFG: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DepthwiseSeparable(nn.Module):
    """``conv_dw`` (depthwise 3x3, BN, ReLU) followed by ``conv_pw`` (1x1, BN, ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = _conv_bn_relu(in_channels, in_channels, 3, stride, groups=in_channels)
        self.conv_pw = _conv_bn_relu(in_channels, out_channels, 1, 1, groups=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.conv_dw(x))


class MobileNetV1(nn.Module):
    """MobileNetV1 with a stride-1 stem, for 32x32 images.

    Args:
        num_classes:
            Output classes.
        in_channels:
            Input image channels.
        width_mult:
            Multiplier of every layer's channel count.
    """

    def __init__(
        self, *, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0
    ) -> None:
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"width_mult must be positive, got {width_mult!r}.")
        if num_classes < 1 or in_channels < 1:
            raise ValueError("num_classes and in_channels must be positive integers.")

        def width(c: int) -> int:
            return max(1, int(round(c * width_mult)))

        c = width(32)
        self.stem = _conv_bn_relu(in_channels, c, 3, 1, groups=1)
        blocks = []
        for out_c, stride in _CFG:
            blocks.append(DepthwiseSeparable(c, width(out_c), stride))
            c = width(out_c)
        self.features = nn.Sequential(*blocks)
        self.linear = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(self.stem(x))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def mobilenet_v1(
    *, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0
) -> MobileNetV1:
    """Build a CIFAR-style MobileNetV1 (about 3.2 M parameters at ``width_mult=1``).

    Args:
        num_classes:
            Output classes.
        in_channels:
            Input image channels.
        width_mult:
            Multiplier of every layer's channel count.

    Returns:
        The randomly initialised network.
    """
    return MobileNetV1(num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)
