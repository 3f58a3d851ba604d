"""Time one pruning trial (clip + prune + reconstruct + evaluate 5000 validation images).

Models: CIFAR ResNet-20 and ResNet-56 (1 input channel) on real Fashion-MNIST images padded
to 32x32 (random weights: the timing does not depend on them). Runs on the CPU and, when
available, on CUDA. Prints a breakdown: time in the forward passes vs. everything else.

Usage::

    python benchmarks/trial_speed.py [--models resnet20 resnet56] [--devices cpu cuda]
        [--repeats 3] [--autocast]

Needs the Fashion-MNIST idx files (Debian package ``dataset-fashion-mnist``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from optuna_bocr.data import load_splits
from optuna_bocr.models import cifar_resnet
from optuna_bocr.pruning import PruningObjective


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(model_name: str, device: torch.device, repeats: int, autocast: bool) -> None:
    """Time ``repeats`` trials of one model on one device and print the breakdown."""
    splits = load_splits("fashion-mnist", val_size=5000, seed=0, image_size=32)
    depth = int(model_name.removeprefix("resnet"))
    torch.manual_seed(0)
    model = cifar_resnet(depth, in_channels=1).eval()
    started = time.perf_counter()
    objective = PruningObjective(
        model,
        calibration=splits.train,
        validation=splits.val,
        flops_ratio=0.5,
        device=device,
        autocast=autocast,
    )
    setup = time.perf_counter() - started

    forward_time = 0.0

    def pre_hook(module: torch.nn.Module, inputs: tuple) -> None:  # noqa: ARG001
        nonlocal forward_started
        _sync(device)
        forward_started = time.perf_counter()

    def post_hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:  # noqa: ARG001
        nonlocal forward_time
        _sync(device)
        forward_time += time.perf_counter() - forward_started

    forward_started = 0.0
    net = objective._model
    handles = [net.register_forward_pre_hook(pre_hook), net.register_forward_hook(post_hook)]
    rng = np.random.default_rng(0)
    totals, forwards = [], []
    objective.evaluate(dict.fromkeys(objective.search_space, 0.5))  # warm-up
    for _ in range(repeats):
        ratios = {n: float(rng.uniform(objective.lbound, 1.0)) for n in objective.search_space}
        forward_time = 0.0
        _sync(device)
        t0 = time.perf_counter()
        result = objective.evaluate(ratios)
        _sync(device)
        totals.append(time.perf_counter() - t0)
        forwards.append(forward_time)
    for handle in handles:
        handle.remove()
    total = statistics.median(totals)
    forward = statistics.median(forwards)
    print(
        f"{model_name:9s} {str(device):6s} layers={len(objective.search_space):3d} "
        f"setup={setup:6.2f}s trial={total:7.3f}s forward={forward:7.3f}s "
        f"other={total - forward:6.3f}s ({100 * (total - forward) / total:4.1f}%) "
        f"top1={result['top1']:.2f} flops={result['flops_ratio']:.3f} "
        f"threads={torch.get_num_threads()}"
    )


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--devices", nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--autocast", action="store_true")
    args = parser.parse_args()
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for device in devices:
        for model_name in args.models:
            bench(model_name, torch.device(device), args.repeats, args.autocast)


if __name__ == "__main__":
    main()
