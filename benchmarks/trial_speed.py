"""Time one pruning trial (clip + prune + reconstruct + evaluate 5000 validation images).

Models: CIFAR ResNet-20, ResNet-56 and MobileNetV1 (1 input channel) on real Fashion-MNIST
images padded to 32x32 (random weights: the timing does not depend on them). Runs on the CPU
and, when available, on CUDA. Prints a breakdown: time in the validation passes ("forward")
vs. everything else, for trials evaluated on the physically pruned network (the default)
and/or on the masked full-size one.

Usage::

    python -m benchmarks.trial_speed [--models resnet20 resnet56 mobilenet_v1]
        [--devices cpu cuda]
        [--repeats 3] [--autocast] [--evaluation pruned masked]

Needs the Fashion-MNIST idx files (Debian package ``dataset-fashion-mnist``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch

from optuna_bocr.data import load_splits
from optuna_bocr.models import cifar_resnet
from optuna_bocr.models import mobilenet_v1
from optuna_bocr.pruning import PruningObjective


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "mobilenet_v1":
        return mobilenet_v1(in_channels=1).eval()
    return cifar_resnet(int(name.removeprefix("resnet")), in_channels=1).eval()


def bench(
    model_name: str, device: torch.device, repeats: int, autocast: bool, evaluate_pruned: bool
) -> None:
    """Time ``repeats`` trials of one model on one device and print the breakdown."""
    splits = load_splits("fashion-mnist", val_size=5000, seed=0, image_size=32)
    started = time.perf_counter()
    objective = PruningObjective(
        _model(model_name),
        calibration=splits.train,
        validation=splits.val,
        flops_ratio=0.5,
        budget_rule="wall",  # the rule of the measurements in benchmarks/README.md
        lbound=0.2 if model_name == "mobilenet_v1" else 0.1,
        device=device,
        autocast=autocast,
        evaluate_pruned=evaluate_pruned,
    )
    setup = time.perf_counter() - started

    # The validation passes, on whichever network the objective evaluates (the masked
    # full-size one or the physically pruned copy).
    forward_time = 0.0
    evaluate_model = objective._evaluate_model

    def timed(*args: Any) -> Any:
        nonlocal forward_time
        _sync(device)
        t0 = time.perf_counter()
        out = evaluate_model(*args)
        _sync(device)
        forward_time += time.perf_counter() - t0
        return out

    objective._evaluate_model = timed  # type: ignore[method-assign,assignment]
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
    total = statistics.median(totals)
    forward = statistics.median(forwards)
    print(
        f"{model_name:12s} {str(device):6s} {'pruned' if evaluate_pruned else 'masked'} "
        f"layers={len(objective.search_space):3d} "
        f"setup={setup:6.2f}s trial={total:7.3f}s forward={forward:7.3f}s "
        f"other={total - forward:6.3f}s ({100 * (total - forward) / total:4.1f}%) "
        f"top1={result['top1']:.2f} flops={result['flops_ratio']:.3f} "
        f"threads={torch.get_num_threads()}"
    )


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        choices=["resnet20", "resnet56", "mobilenet_v1"],
        default=["resnet20", "resnet56"],
    )
    parser.add_argument("--devices", nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--autocast", action="store_true")
    parser.add_argument(
        "--evaluation",
        nargs="+",
        choices=["pruned", "masked"],
        default=["pruned"],
        help="evaluate trials on the physically pruned network, the masked one, or both",
    )
    args = parser.parse_args()
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for device in devices:
        for model_name in args.models:
            for evaluation in args.evaluation:
                bench(
                    model_name,
                    torch.device(device),
                    args.repeats,
                    args.autocast,
                    evaluation == "pruned",
                )


if __name__ == "__main__":
    main()
