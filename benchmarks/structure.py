"""Do a benchmark network's layer features pass BOCR's structure test?

For one task of the pruning benchmark (its committed or trained checkpoint), the p-value of
BOCRSampler's permutation test for the task's number of clusters, on the L1-importance
densities (distances ``"eu"`` and ``"js"``) and, with ``--probe-images N``, on the
sensitivity curves of :func:`optuna_bocr.pruning.layer_sensitivity` (each layer pruned alone
to 0.1, 0.25, 0.5 and 0.75 on the first N validation images: the divergence of the outputs
and the top-1 accuracy lost, each as its own features; distance ``"st"``). The probe's cost
is printed in evaluations and seconds. With ``--out``, the probe's curves, its cost and the
p-values are written as JSON.

Example::

    python -m benchmarks.structure --task resnet20 --train-epochs 6 --probe-images 1000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import time
from typing import Literal
from typing import TYPE_CHECKING

from benchmarks import _jobs
from benchmarks import pruning

if TYPE_CHECKING:
    from optuna_bocr import ParameterFeatures


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=sorted(pruning.TASKS), default="resnet20")
    p.add_argument("--train-epochs", type=float, default=6, help="which checkpoint (epochs)")
    p.add_argument("--train-max-images", type=int, default=None)
    p.add_argument(
        "--train-autocast", action="store_true", help="the checkpoint trained in mixed precision"
    )
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--n-calibration-images", type=int, default=1000)
    p.add_argument(
        "--probe-images", type=int, default=0, help="validation images of the probe (0: none)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default=None)
    p.add_argument("--work-dir", default="benchmarks/_work")
    p.add_argument("--out", default=None, help="write the results here (JSON)")
    args = p.parse_args(argv)
    if args.probe_images < 0:
        p.error(f"--probe-images must be >= 0, got {args.probe_images}")
    if args.threads > 0:
        _jobs.limit_threads(args.threads)
    # The pruning benchmark's helpers read these settings.
    args.flops_ratio, args.autocast, args.masked_eval = 0.5, False, False

    from optuna_bocr import BOCRSampler
    from optuna_bocr.pruning import layer_sensitivity

    path = pruning.checkpoint_path(args, args.task)
    if not path.exists():
        p.error(f"no checkpoint {path}: train it with benchmarks.pruning first")
    objective = pruning.get_objective(args, args.task)
    k = pruning.TASKS[args.task]["n_clusters"]
    result: dict[str, object] = {
        "task": args.task,
        "checkpoint": path.name,
        "fingerprint": pruning.checkpoint_fingerprint(path),
        "n_clusters": k,
        "n_layers": len(objective.search_space),
    }

    def pvalue(features: ParameterFeatures, distance: Literal["eu", "js", "st"]) -> float:
        sampler = BOCRSampler(
            objective.search_space, features=features, distance=distance, n_clusters=k
        )
        assert sampler.structure_pvalue is not None
        return float(sampler.structure_pvalue)

    distances: tuple[Literal["eu", "js"], ...] = ("eu", "js")
    for distance in distances:
        result[f"p_l1_{distance}"] = pvalue(objective.layer_features(), distance)
        print(f"L1 densities, {distance}: p = {result[f'p_l1_{distance}']:.2f}", flush=True)
    if args.probe_images:
        splits = pruning.get_splits(args)
        from optuna_bocr.models import build_model
        from optuna_bocr.models import load_checkpoint

        model = build_model(
            pruning.TASKS[args.task]["model"],
            num_classes=splits.num_classes,
            in_channels=splits.in_channels,
        )
        load_checkpoint(model, path)
        t0 = time.perf_counter()
        probe = layer_sensitivity(
            model,
            calibration=splits.train,
            validation=splits.val,
            n_images=args.probe_images,
            n_calibration_images=args.n_calibration_images,
            device=args.device,
            show_progress_bar=True,
        )
        result["p_probe_kl"] = pvalue(probe.features("divergence"), "st")
        result["p_probe_top1"] = pvalue(probe.features("top1"), "st")
        result["probe"] = {
            "ratios": list(probe.ratios),
            "drops": {n: d.tolist() for n, d in probe.drops.items()},
            "divergences": {n: d.tolist() for n, d in probe.divergences.items()},
            "baseline_top1": probe.baseline_top1,
            "n_images": probe.n_images,
            "n_evaluations": probe.n_evaluations,
            "seconds": time.perf_counter() - t0,
        }
        print(
            f"probe ({probe.n_evaluations} evaluations of {probe.n_images} images, "
            f"{probe.seconds:.0f} s): p = {result['p_probe_kl']:.2f} on the divergences, "
            f"{result['p_probe_top1']:.2f} on the accuracy lost",
            flush=True,
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
