"""``optuna-bocr train``: train a baseline and cache its checkpoint."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import os
from pathlib import Path
import time
from typing import Any

from optuna_bocr.cli._base import Command
from optuna_bocr.cli._base import positive_int
from optuna_bocr.cli._common import baseline_path
from optuna_bocr.cli._common import build_model
from optuna_bocr.cli._common import check_model_name
from optuna_bocr.cli._common import check_writable
from optuna_bocr.cli._common import CLIError
from optuna_bocr.cli._common import load_data
from optuna_bocr.cli._common import resolve_device
from optuna_bocr.cli._settings import DataSettings
from optuna_bocr.cli._settings import TrainSettings


def train_baseline(
    model: Any,
    splits: Any,
    *,
    data: DataSettings,
    train: TrainSettings,
    device: Any,
    output: Path,
    val_size: int,
) -> dict[str, Any]:
    """Train ``model`` on ``splits.train``, save it to ``output``; return its metadata."""
    import torch

    from optuna_bocr.training import evaluate
    from optuna_bocr.training import train as train_model

    n = min(train.images, len(splits.train))
    print(
        f"Training a {data.model} baseline on {splits.name}: {train.epochs:g} epoch(s) of "
        f"{n} images on {device} ...",
        flush=True,
    )
    t0 = time.perf_counter()
    train_model(
        model,
        splits.train,
        epochs=train.epochs,
        batch_size=train.batch_size,
        lr=train.lr,
        device=device,
        seed=data.seed,
        max_images=train.images,
        augment=train.augment,
        autocast=train.autocast,
        progress=not data.quiet,
    )
    seconds = time.perf_counter() - t0
    val_top1, _ = evaluate(model, splits.val, device=device)
    meta = {
        "model": data.model,
        "dataset": splits.name,
        "val_size": val_size,
        "seed": data.seed,
        "image_size": splits.image_size,
        "epochs": train.epochs,
        "train_images_per_epoch": n,
        "augment": train.augment,
        "autocast": train.autocast,
        "val_top1": val_top1,
        "train_seconds": seconds,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = output.with_name(output.name + ".tmp")
    torch.save({"state_dict": state, "optuna_bocr": meta}, tmp)
    os.replace(tmp, output)
    print(
        f"Baseline: {val_top1:.2f}% top-1 on {len(splits.val)} validation images after "
        f"{seconds:.0f} s; saved to {output}",
        flush=True,
    )
    return meta


@dataclass(frozen=True)
class TrainJob:
    """Everything ``optuna-bocr train`` was asked to do."""

    data: DataSettings
    train: TrainSettings
    val_size: int
    test_size: int | None
    output: str | None

    def check(self) -> None:
        """Refuse bad settings before any work."""
        check_model_name(self.data.model, self.data.model_kwargs)
        if self.train.epochs <= 0:
            raise CLIError("--epochs must be positive")
        if self.output is not None:
            check_writable(Path(self.output), "checkpoint")


class TrainCommand(Command):
    """``optuna-bocr train``."""

    name = "train"
    help = "train a baseline model and save the checkpoint"
    description = (
        "Train a baseline of a shipped model on a dataset (SGD, cosine learning rate, random "
        "crops and flips) and save the checkpoint where `prune` finds it."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        DataSettings.add_arguments(parser)
        parser.add_argument(
            "--val-size",
            type=positive_int,
            default=5000,
            metavar="N",
            help="training images held out for validation; `prune` must use at most this many "
            "with the same --seed so that its validation images were never trained on "
            "(default: %(default)s)",
        )
        TrainSettings.add_arguments(parser, epochs=2.0)
        parser.add_argument(
            "--test-size",
            type=positive_int,
            default=None,
            metavar="N",
            help="report accuracy on the first N test images only (default: the whole test set)",
        )
        parser.add_argument(
            "--output",
            default=None,
            metavar="PATH",
            help="checkpoint file (default: the cache path that `prune` looks up, "
            "<cache-dir>/checkpoints/<model>-<dataset>-seed<seed>.pt)",
        )

    def take_action(self, args: argparse.Namespace) -> int:
        job = TrainJob(
            data=DataSettings.from_args(args),
            train=TrainSettings.from_args(args),
            val_size=args.val_size,
            test_size=args.test_size,
            output=args.output,
        )
        job.check()
        return run_train(job)


def run_train(job: TrainJob) -> int:
    """Train the baseline, save it, report its test accuracy."""
    from torch.utils.data import Subset

    from optuna_bocr.training import evaluate

    device = resolve_device(job.data.device)
    splits = load_data(job.data, job.val_size)
    model = build_model(job.data.model, splits, seed=job.data.seed, kwargs=job.data.model_kwargs)
    output = (
        Path(job.output)
        if job.output
        else baseline_path(
            job.data.cache_dir, job.data.model, splits.name, job.data.seed, job.data.model_kwargs
        )
    )
    check_writable(output, "checkpoint")
    train_baseline(
        model, splits, data=job.data, train=job.train, device=device, output=output,
        val_size=job.val_size,
    )  # fmt: skip
    test_set = splits.test
    if job.test_size is not None and job.test_size < len(test_set):
        test_set = Subset(test_set, range(job.test_size))
    top1, top5 = evaluate(model, test_set, device=device)
    print(f"Test accuracy: top-1 {top1:.2f}%, top-5 {top5:.2f}% ({len(test_set)} images)")
    return 0
