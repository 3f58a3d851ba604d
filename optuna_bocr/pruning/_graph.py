"""Discovery of the prunable layers of a CNN from its structure (torch-pruning's graph).

A *prunable layer* is a ``Conv2d`` (``groups == 1``) whose input channels can be removed by
removing only

- the output channels of exactly one producing ``Conv2d`` (``groups == 1``),
- the ``BatchNorm2d`` layers and element-wise activations between them, and
- depthwise convolutions between them (they follow their producer, as in MobileNet),

with no residual add, concatenation, split, reshape, grouped convolution or second consumer
in between. Channels tied to a residual add (for example the residual stream of a ResNet)
are therefore never pruned, and neither is the first convolution (it has no producer). The
name of the parameter is the module name of the consumer, e.g. ``"layer1.0.conv2"``.

``Linear`` layers are never prunable layers: the last classifier keeps all its inputs (as in
BOCR, where the first and last layers keep ratio 1), and the hidden ``Linear`` layers of
VGG-style classifiers are left alone (their inputs come from a flatten, whose channel to
feature mapping this package does not reconstruct).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
import warnings

import torch
from torch import nn
import torch_pruning as tp


@dataclass(frozen=True)
class ConvInfo:
    """Shape facts of one convolution or linear layer measured on the example input.

    Attributes:
        name: Module name.
        in_channels: Input channels (features for ``Linear``).
        out_channels: Output channels (features for ``Linear``).
        groups: Convolution groups (1 for ``Linear``).
        spatial: Multiply-accumulates per (output channel, input channel per group) pair:
            output positions times kernel area (for ``Linear``: the number of rows per
            sample, usually 1).
        kernel_area: ``kh * kw`` (1 for ``Linear``).
        output_size: Output positions ``H_out * W_out`` (1 for ``Linear``).
        has_bias: Whether the layer has a bias.
    """

    name: str
    in_channels: int
    out_channels: int
    groups: int
    spatial: int
    kernel_area: int
    output_size: int
    has_bias: bool

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the unpruned layer for one sample."""
        return self.spatial * self.out_channels * (self.in_channels // self.groups)

    @property
    def depthwise(self) -> bool:
        """Whether the layer is a depthwise convolution."""
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels


@dataclass(frozen=True)
class PrunableLayer:
    """A prunable layer and everything that removing its input channels touches.

    Attributes:
        name: Module name of the consumer convolution (the search parameter name).
        producer: Module name of the convolution whose output channels are removed.
        depthwise: Module names of the depthwise convolutions between them.
        batchnorms: Module names of the batch norms between them.
        channels: Number of input channels of the consumer.
    """

    name: str
    producer: str
    depthwise: tuple[str, ...]
    batchnorms: tuple[str, ...]
    channels: int


def _is_depthwise(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.groups > 1
        and module.groups == module.in_channels == module.out_channels
    )


def measure_layers(model: nn.Module, example: torch.Tensor) -> dict[str, ConvInfo]:
    """Run ``model`` once on ``example`` and measure every ``Conv2d`` and ``Linear``.

    Args:
        model: The network (left in the mode it is in).
        example: One input batch (only the first sample is used).

    Returns:
        Module name -> :class:`ConvInfo`, in execution order.
    """
    infos: dict[str, ConvInfo] = {}
    handles = []

    def make_hook(
        name: str,
    ) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def hook(
            module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
        ) -> None:
            if name in infos:
                raise ValueError(f"Layer {name!r} is called more than once per forward pass.")
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                out_size = int(output.shape[-1] * output.shape[-2])
                infos[name] = ConvInfo(
                    name=name,
                    in_channels=module.in_channels,
                    out_channels=module.out_channels,
                    groups=module.groups,
                    spatial=out_size * kh * kw,
                    kernel_area=kh * kw,
                    output_size=out_size,
                    has_bias=module.bias is not None,
                )
            else:
                assert isinstance(module, nn.Linear)
                rows = int(output[0].numel() // module.out_features)
                infos[name] = ConvInfo(
                    name=name,
                    in_channels=module.in_features,
                    out_channels=module.out_features,
                    groups=1,
                    spatial=rows,
                    kernel_area=1,
                    output_size=rows,
                    has_bias=module.bias is not None,
                )

        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(make_hook(name)))
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for handle in handles:
            handle.remove()
    return infos


def build_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """Trace ``model`` (parameters temporarily requiring grad) into a dependency graph."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.enable_grad():
                return tp.DependencyGraph().build_dependency(
                    model, example_inputs=example[:1], verbose=False
                )
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def find_prunable_layers(
    model: nn.Module, example: torch.Tensor, order: Sequence[str]
) -> list[PrunableLayer]:
    """Find the prunable layers of ``model`` with torch-pruning's dependency graph.

    Args:
        model: The network (in eval mode). It is traced once with ``example``; not modified.
        example: One input batch of the right shape, on the model's device.
        order: Module names in execution order (the order of the result).

    Returns:
        The prunable layers in execution order (see the module docstring for the rule).
    """
    return classify_layers(model, example, order)[0]


def classify_layers(
    model: nn.Module, example: torch.Tensor, order: Sequence[str]
) -> tuple[list[PrunableLayer], dict[str, str]]:
    """Like :func:`find_prunable_layers`, and why each other layer is not prunable.

    Returns:
        The prunable layers in execution order, and module name -> reason for every other
        ``Conv2d`` and ``Linear`` layer of ``model`` (in module order).
    """
    graph = build_graph(model, example)
    names = {module: name for name, module in model.named_modules()}
    rank = {name: i for i, name in enumerate(order)}
    layers: list[PrunableLayer] = []
    reasons: dict[str, str] = {}
    for module, name in names.items():
        if isinstance(module, nn.Linear):
            reasons[name] = "Linear layers keep their inputs"
            continue
        if not isinstance(module, nn.Conv2d):
            continue
        if module.groups != 1:
            reasons[name] = (
                "depthwise, pruned with its producer" if _is_depthwise(module) else "grouped"
            )
        elif name not in rank or module not in graph.module2node:
            reasons[name] = "not run in the forward pass"
        else:
            verdict = _check_group(graph, module, name, names)
            if isinstance(verdict, PrunableLayer):
                layers.append(verdict)
            else:
                reasons[name] = verdict
    layers.sort(key=lambda layer: rank[layer.name])
    return layers, reasons


def _check_group(
    graph: tp.DependencyGraph, consumer: nn.Conv2d, name: str, names: dict[nn.Module, str]
) -> PrunableLayer | str:
    """The prunable layer of ``consumer``, or why it is not one."""
    channels = consumer.in_channels
    try:
        group = graph.get_pruning_group(
            consumer, tp.prune_conv_in_channels, idxs=list(range(channels))
        )
    except Exception:  # torch-pruning cannot map this group: not prunable.
        return "torch-pruning cannot trace its input channels"
    producers: list[str] = []
    depthwise: list[str] = []
    batchnorms: list[str] = []
    consumer_seen = 0
    for item in group:
        dep, idxs = item.dep, item.idxs
        target = dep.target.module
        if len(idxs) != channels:
            return "its input channels are part of a concatenation or split"
        if isinstance(target, nn.Conv2d):
            target_name = names[target]
            if _is_depthwise(target):
                if target_name not in depthwise:
                    depthwise.append(target_name)
            elif target.groups != 1:
                return f"its input channels are tied to grouped convolution {target_name}"
            elif graph.is_in_channel_pruning_fn(dep.handler):
                if target is not consumer:
                    return f"its input channels also feed {target_name} (a shared stream)"
                consumer_seen += 1
            elif graph.is_out_channel_pruning_fn(dep.handler):
                if target is consumer:
                    return "its input channels are its own output channels"
                if target_name not in producers:
                    producers.append(target_name)
            else:
                return f"its input channels are tied to {target_name} in an unsupported way"
        elif isinstance(target, nn.BatchNorm2d):
            target_name = names[target]
            if target_name not in batchnorms:
                batchnorms.append(target_name)
        elif isinstance(target, tp.ops._ElementWiseOp):
            continue
        else:
            # Linear, concat, split, reshape, slice, output, other parametrised layers ...
            if target in names:
                return f"its input channels are tied to {names[target]}"
            op = type(target).__name__.strip("_").removesuffix("Op").lower()
            return f"its input channels pass through a {op} operation"
    if not producers:
        return "no Conv2d produces its input (e.g. the first layer)"
    if len(producers) > 1:
        return f"its input is the sum of {', '.join(producers)} (a residual add)"
    if consumer_seen != 1:
        return "torch-pruning does not map its input channels once"
    return PrunableLayer(
        name=name,
        producer=producers[0],
        depthwise=tuple(depthwise),
        batchnorms=tuple(batchnorms),
        channels=channels,
    )
