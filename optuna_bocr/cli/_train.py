"""``optuna-bocr train``: train a baseline and cache its checkpoint."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import time
from typing import Any

from optuna_bocr.cli._common import baseline_path
from optuna_bocr.cli._common import build_model
from optuna_bocr.cli._common import check_model_name
from optuna_bocr.cli._common import check_writable
from optuna_bocr.cli._common import CLIError
from optuna_bocr.cli._common import load_data
from optuna_bocr.cli._common import resolve_device


def train_baseline(
    model: Any,
    splits: Any,
    *,
    args: argparse.Namespace,
    epochs: float,
    max_images: int | None,
    lr: float,
    batch_size: int,
    device: Any,
    output: Path,
    val_size: int,
    augment: bool,
) -> dict[str, Any]:
    import torch

    from optuna_bocr.training import evaluate
    from optuna_bocr.training import train

    n = len(splits.train) if max_images is None else min(max_images, len(splits.train))
    print(
        f"Training a {args.model} baseline on {splits.name}: {epochs:g} epoch(s) of {n} images "
        f"on {device} ...",
        flush=True,
    )
    t0 = time.perf_counter()
    train(
        model,
        splits.train,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        device=device,
        seed=args.seed,
        max_images=max_images,
        augment=augment,
        progress=not args.quiet,
    )
    seconds = time.perf_counter() - t0
    val_top1, _ = evaluate(model, splits.val, device=device)
    meta = {
        "model": args.model,
        "dataset": splits.name,
        "val_size": val_size,
        "seed": args.seed,
        "image_size": splits.image_size,
        "epochs": epochs,
        "train_images_per_epoch": n,
        "augment": augment,
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


def cmd_train(args: argparse.Namespace) -> int:
    """``optuna-bocr train``."""
    from torch.utils.data import Subset

    from optuna_bocr.training import evaluate

    check_model_name(args.model)
    device = resolve_device(args.device)
    if args.epochs <= 0:
        raise CLIError("--epochs must be positive")
    splits = load_data(args, args.val_size)
    model = build_model(args.model, splits, seed=args.seed)
    output = (
        Path(args.output)
        if args.output
        else baseline_path(args.cache_dir, args.model, splits.name, args.seed)
    )
    check_writable(output)
    train_baseline(
        model,
        splits,
        args=args,
        epochs=args.epochs,
        max_images=args.images,
        lr=args.lr,
        batch_size=args.batch_size,
        device=device,
        output=output,
        val_size=args.val_size,
        augment=args.augment,
    )
    test_set = splits.test
    if args.test_size is not None and args.test_size < len(test_set):
        test_set = Subset(test_set, range(args.test_size))
    top1, top5 = evaluate(model, test_set, device=device)
    print(f"Test accuracy: top-1 {top1:.2f}%, top-5 {top5:.2f}% ({len(test_set)} images)")
    return 0
