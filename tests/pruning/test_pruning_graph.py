"""Prunable-layer discovery from the model structure (random weights; no data needed)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
import torchvision

from optuna_bocr import models
from optuna_bocr.pruning._graph import find_prunable_layers
from optuna_bocr.pruning._graph import measure_layers
from optuna_bocr.pruning._graph import PrunableLayer


def _layers(model: nn.Module, size: int, channels: int = 3) -> list[PrunableLayer]:
    model.eval()
    x = torch.randn(1, channels, size, size)
    infos = measure_layers(model, x)
    return find_prunable_layers(model, x, list(infos))


class _Concat(nn.Module):
    """Two branches concatenated: the branch outputs are tied to the concat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.mix = nn.Conv2d(16, 8, 1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.after = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1)
        x = torch.relu(self.mix(x))
        x = self.after(torch.relu(self.grouped(x)))
        return self.head(x.mean(dim=(2, 3)))


def _sequential() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


@pytest.mark.parametrize(("depth", "count"), [(20, 9), (32, 15), (44, 21), (56, 27), (110, 54)])
def test_cifar_resnets(depth: int, count: int) -> None:
    layers = _layers(models.cifar_resnet(depth), 32)
    n = (depth - 2) // 6
    expected = [f"layer{s}.{b}.conv2" for s in (1, 2, 3) for b in range(n)]
    assert [layer.name for layer in layers] == expected
    assert len(layers) == count
    first = layers[0]
    assert first.producer == "layer1.0.conv1"
    assert first.batchnorms == ("layer1.0.bn1",)
    assert first.depthwise == ()
    assert [layer.channels for layer in layers[::n]] == [16, 32, 64]


def test_mobilenet_v1() -> None:
    layers = _layers(models.mobilenet_v1(), 32)
    assert len(layers) == 13  # every pointwise conv; the depthwise convs follow
    for layer in layers:
        assert len(layer.depthwise) == 1
        assert len(layer.batchnorms) == 2
    names = [layer.name for layer in layers]
    assert [layer.producer for layer in layers[1:]] == names[:-1]


@pytest.mark.parametrize(
    ("factory", "count", "expected"),
    [
        (torchvision.models.resnet18, 8, ["layer1.0.conv2", "layer4.1.conv2"]),
        (torchvision.models.resnet50, 32, ["layer1.0.conv2", "layer1.0.conv3", "layer4.2.conv3"]),
        (
            torchvision.models.mobilenet_v2,
            19,
            ["features.1.conv.1", "features.2.conv.0.0", "features.18.0"],
        ),
        (torchvision.models.vgg11_bn, 7, ["features.4", "features.25"]),
    ],
)
def test_torchvision(factory: Callable[..., nn.Module], count: int, expected: list[str]) -> None:
    layers = _layers(factory(weights=None), 64)
    names = [layer.name for layer in layers]
    assert len(layers) == count, names
    assert set(expected) <= set(names)
    # Never the first conv, never a Linear, never a conv fed by a residual add.
    assert not any(
        "downsample" in n or n in ("conv1", "features.0", "features.0.0") for n in names
    )
    assert not any("classifier" in n or n == "fc" for n in names)


def test_resnet50_residual_inputs_are_excluded() -> None:
    layers = _layers(torchvision.models.resnet50(weights=None), 64)
    names = {layer.name for layer in layers}
    # conv1 of every bottleneck reads the residual stream.
    assert not any(n.endswith("conv1") for n in names)
    chain = {layer.name: layer.producer for layer in layers}
    assert chain["layer2.0.conv3"] == "layer2.0.conv2"


def test_mobilenet_v2_projection_follows_the_depthwise() -> None:
    layers = {layer.name: layer for layer in _layers(torchvision.models.mobilenet_v2(), 64)}
    layer = layers["features.3.conv.2"]
    assert layer.producer == "features.3.conv.0.0"
    assert layer.depthwise == ("features.3.conv.1.0",)
    # Expansion convs reading a residual stream are not prunable.
    assert "features.4.conv.0.0" not in layers


def test_sequential() -> None:
    layers = _layers(_sequential(), 28, channels=1)
    assert [(layer.name, layer.producer) for layer in layers] == [("4", "0"), ("7", "4")]
    assert layers[0].batchnorms == ("1",)


def test_concat_and_groups_are_left_alone() -> None:
    layers = _layers(_Concat(), 16, channels=1)
    # a/b feed a concat (not prunable through it), 'mix' reads the concat, 'grouped' is a
    # grouped conv and 'after' reads a grouped conv: nothing but the two branches' inputs
    # would be candidates, and they share the stem (two consumers): none is prunable.
    assert layers == []
