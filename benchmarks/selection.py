"""Do a search's validation gains carry to the test split, and does the GP's mean pick better?

A best validation top-1 is the maximum of many scores on the same few hundred images, so
part of it is luck on those images. Three measures on finished pruning-benchmark studies:

- ``carry``: for each (method, seed) tested at two budgets (the ``final_<task>.json`` of two
  report folders, written by ``benchmarks.pruning --seed-tests``), how much of the gain of
  the best validation top-1 between the budgets the chosen network keeps on the test split.
- ``pick``: per study, the trial of best GP posterior mean (BOCR's GP fitted to every
  COMPLETE trial of the first ``--n-trials``, on its budgeted ratios) against the best
  observation, both tested on the test split: does choosing by the mean keep better
  networks?
- ``rescore``: per study, the ``--top-k`` best distinct networks (distinct kept channels,
  as ``optuna-bocr export --top-k`` takes them) scored again on the held-out images the
  search never saw (those of the first ``--rescore-size`` validation images
  beyond its ``--val-size``; the checkpoints held out 5000), and the trial best on them, or
  on all the validation images together, tested against the best observation: does
  spending a few evaluations on more images at the end keep better networks?

Example::

    python -m benchmarks.selection --task resnet20 --val-size 1000 --train-epochs 6 \\
        --storage benchmarks/results/pruning-resnet20-scale/studies.log \\
        --carry benchmarks/results/pruning-resnet20-scale/t100 \\
        benchmarks/results/pruning-resnet20-scale/t200-s10 \\
        --pick bocr-trust,cmaes --seeds 10 --n-trials 200 \\
        --out benchmarks/results/pruning-resnet20-scale/selection.json
    python -m benchmarks.selection --task resnet20 --val-size 1000 --train-epochs 6 \\
        --storage benchmarks/results/pruning-resnet20-scale/studies.log \\
        --rescore bocr-trust,cmaes --top-k 5 --seeds 10 --n-trials 200 \\
        --out benchmarks/results/pruning-resnet20-scale/selection.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import time
from typing import Any

import numpy as np

from benchmarks import _common as common
from benchmarks._pruning_final import test_split
from benchmarks._pruning_setup import get_objective
from benchmarks._pruning_setup import TASKS
from benchmarks._rescore import rescore
from benchmarks._rescore import rescore_summary
from benchmarks._selection_studies import cached
from benchmarks._selection_studies import finished_studies
from benchmarks._selection_studies import paired_interval
from benchmarks._selection_studies import results_by_method
from benchmarks._selection_studies import write_results
from optuna_bocr.keys import ACTUAL_PARAMS_KEY

__all__ = ["main", "paired_interval", "rescore", "rescore_summary"]


def carry(early: dict[str, Any], late: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per method, the validation and test gains of the chosen network between two budgets.

    Args:
        early, late: The ``"seeds"`` records of two ``final_<task>.json`` files (study name
            to ``{"method", "seed", "trial", "val_top1", "test_top1"}``).

    Returns:
        Per method with a study in both: seeds, how many chose another trial at the later
        budget, and the paired validation and test gains (:func:`paired_interval`).
    """
    by_method: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for name, b in late.items():
        if name in early:
            by_method.setdefault(b["method"], []).append((early[name], b))
    out: dict[str, dict[str, Any]] = {}
    for method, pairs in sorted(by_method.items()):
        out[method] = {
            "seeds": len(pairs),
            "new_best": sum(a["trial"] != b["trial"] for a, b in pairs),
            "val_gain": paired_interval([b["val_top1"] - a["val_top1"] for a, b in pairs]),
            "test_gain": paired_interval([b["test_top1"] - a["test_top1"] for a, b in pairs]),
            "test_early_median": float(np.median([a["test_top1"] for a, _ in pairs])),
            "test_late_median": float(np.median([b["test_top1"] for _, b in pairs])),
        }
    return out


def optimism(late: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per method, the mean of the chosen networks' validation minus test top-1.

    Part of it is the two splits' difference (random search's networks, chosen from few
    good ones, show the least); the rest is how much the chosen scores owe to luck on the
    validation images, which grows with the number of near-equal networks compared.
    """
    by_method: dict[str, list[float]] = {}
    for r in late.values():
        by_method.setdefault(r["method"], []).append(r["val_top1"] - r["test_top1"])
    return {
        m: {"seeds": len(g), "val_minus_test": float(np.mean(g))}
        for m, g in sorted(by_method.items())
    }


def best_mean_index(ratios: np.ndarray, values: np.ndarray, lbound: float) -> tuple[int, float]:
    """Index of the trial of best GP posterior mean, and the fitted noise in value units.

    Args:
        ratios: ``(n, d)`` budgeted preserve ratios of the trials, in ``[lbound, 1]``.
        values: ``(n,)`` their validation top-1 (larger is better).
        lbound: The smallest ratio: ``[lbound, 1]`` maps to the GP's unit cube.
    """
    import torch

    from optuna_bocr.sampler._gp import fit_gp
    from optuna_bocr.sampler._posterior import Posterior

    scale = float(values.std()) or 1.0
    model, _ = fit_gp((ratios - lbound) / (1.0 - lbound), (values - values.mean()) / scale)
    with torch.no_grad():
        mean = Posterior(model)(torch.from_numpy(model.x.numpy()))[0].numpy()
    noise = float(model.hyperparameters.noise.sqrt()) * scale
    return int(np.argmax(mean)), noise


def pick(args: argparse.Namespace, methods: list[str], seeds: list[int]) -> dict[str, Any]:
    """Per study, the best observation and the trial of best posterior mean, both tested.

    Cached in ``--out`` per study and ``--n-trials``.
    """
    from optuna_bocr.training import evaluate

    path = Path(args.out)
    done = cached(path, "pick")
    test = None
    for key, method, seed, trials in finished_studies(args, methods, seeds, done):
        name = key.split("|")[0]
        names = sorted(trials[0].params)
        ratios = np.array([[t.user_attrs[ACTUAL_PARAMS_KEY][n] for n in names] for t in trials])
        values = np.array([float(t.value) for t in trials])  # type: ignore[arg-type]
        i_mean, noise = best_mean_index(ratios, values, TASKS[args.task]["lbound"])
        i_obs = int(np.argmax(values))
        objective = get_objective(args, args.task)
        test = test_split(args) if test is None else test
        t0 = time.perf_counter()
        tested = {i: evaluate(objective.export(trials[i]), test, device=args.device)[0]
                  for i in {i_obs, i_mean}}  # fmt: skip
        done[key] = {
            "method": method,
            "seed": seed,
            "observed_trial": trials[i_obs].number,
            "mean_trial": trials[i_mean].number,
            "observed_val": float(values[i_obs]),
            "mean_val": float(values[i_mean]),
            "observed_test": tested[i_obs],
            "mean_test": tested[i_mean],
            "noise_sd": noise,
            "seconds": time.perf_counter() - t0,
        }
        print(
            f"[pick] {name}: best observation trial {trials[i_obs].number} (test "
            f"{tested[i_obs]:.2f}), best mean trial {trials[i_mean].number} (test "
            f"{tested[i_mean]:.2f})",
            flush=True,
        )
        write_results(path, {"pick": done})
    return done


def pick_summary(
    done: dict[str, Any], n_trials: int, test_size: int | None = None
) -> dict[str, dict[str, Any]]:
    """Per method: the mean pick's test top-1 minus the best observation's, paired by seed."""
    by_method = results_by_method(done, n_trials, test_size)
    return {
        m: {
            "seeds": len(rs),
            "same_trial": sum(r["mean_trial"] == r["observed_trial"] for r in rs),
            "observed_test_median": float(np.median([r["observed_test"] for r in rs])),
            "mean_test_median": float(np.median([r["mean_test"] for r in rs])),
            "mean_minus_observed": paired_interval(
                [r["mean_test"] - r["observed_test"] for r in rs]
            ),
            "noise_sd_median": float(np.median([r["noise_sd"] for r in rs])),
        }
        for m, rs in sorted(by_method.items())
    }


def _interval(s: dict[str, float], n: int) -> str:
    return f"{s['mean']:+.2f} [{s['low']:+.2f}, {s['high']:+.2f}] ({s['ahead']}/{n})"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--storage", required=True, help="the benchmark's storage (a studies.log)")
    p.add_argument("--out", required=True, help="results (JSON); pick results are cached here")
    p.add_argument(
        "--carry", nargs=2, metavar=("EARLY", "LATE"), help="two report folders to compare"
    )
    p.add_argument("--pick", default="", help="comma-separated methods to run the pick on")
    p.add_argument("--rescore", default="", help="comma-separated methods to re-score")
    p.add_argument("--top-k", type=int, default=5, help="trials the re-score compares")
    p.add_argument(
        "--rescore-size", type=int, default=5000, help="validation images of the re-score"
    )
    p.add_argument("--seeds", default="5", help="N (seeds 0..N-1), 'a-b' or 'a,b,c'")
    p.add_argument("--n-trials", type=int, default=200, help="the pick's first trials")
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument(
        "--test-size", type=int, default=None, help="test on the first N test images (all)"
    )
    p.add_argument("--n-calibration-images", type=int, default=None, help="(--val-size)")
    p.add_argument("--train-epochs", type=float, default=15, help="which checkpoint")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-root", default=None)
    p.add_argument("--work-dir", default="benchmarks/_work")
    args = p.parse_args(argv)
    if not args.carry and not args.pick and not args.rescore:
        p.error("nothing to do: give --carry EARLY LATE, --pick METHODS or --rescore METHODS")
    if args.test_size is not None and args.test_size < 1:
        p.error(f"--test-size must be at least 1, got {args.test_size}")
    if args.top_k < 2:
        p.error(f"--top-k must be at least 2, got {args.top_k}")
    if args.rescore and args.rescore_size <= args.val_size:
        p.error(f"--rescore-size ({args.rescore_size}) must exceed --val-size ({args.val_size})")
    reports = [Path(d) / f"final_{args.task}.json" for d in args.carry or []]
    missing = [str(r) for r in reports if not r.is_file()]
    if missing:
        p.error(f"no seed tests at {', '.join(missing)}: run benchmarks.pruning --seed-tests")
    # The pruning benchmark's helpers read these settings (the -scale studies).
    args.flops_ratio, args.autocast, args.masked_eval, args.distance = 0.5, False, False, None
    args.budget_rule, args.train_max_images = "scale", None
    if args.n_calibration_images is None:
        args.n_calibration_images = args.val_size
    if args.carry:
        early, late = (json.loads(r.read_text())["seeds"] for r in reports)
        result = carry(early, late)
        gaps = optimism(late)
        write_results(
            Path(args.out),
            {
                "carry": {"early": args.carry[0], "late": args.carry[1], **result},
                "optimism": gaps,
            },
        )
        print(
            f"Validation and test gains from {args.carry[0]} to {args.carry[1]}, paired by seed:"
        )
        for m, r in result.items():
            n = r["seeds"]
            print(
                f"  {m}: {n} seeds ({r['new_best']} chose another trial), val "
                f"{_interval(r['val_gain'], n)}, test {_interval(r['test_gain'], n)}"
            )
        print(f"Validation minus test top-1 of the chosen networks at {args.carry[1]}:")
        for m, g in gaps.items():
            print(f"  {m}: {g['val_minus_test']:.2f} ({g['seeds']} seeds)")
    if args.pick:
        methods = [m for m in args.pick.split(",") if m]
        done = pick(args, methods, common.parse_seeds(args.seeds))
        summary = pick_summary(done, args.n_trials, args.test_size)
        write_results(Path(args.out), {"pick_summary": summary})
        print(f"Test top-1 of the best-mean trial minus the best observation ({args.n_trials}):")
        for m, s in summary.items():
            print(
                f"  {m}: {s['seeds']} seeds ({s['same_trial']} the same trial), "
                f"{_interval(s['mean_minus_observed'], s['seeds'])}; medians "
                f"{s['observed_test_median']:.2f} -> {s['mean_test_median']:.2f}"
            )
    if args.rescore:
        methods = [m for m in args.rescore.split(",") if m]
        found = rescore_summary(
            rescore(args, methods, common.parse_seeds(args.seeds)), args.n_trials, args.test_size
        )
        write_results(Path(args.out), {"rescore_summary": found})
        print(
            f"Test top-1 of the best of the top {args.top_k} on {args.rescore_size} validation "
            "images minus the best observation's:"
        )
        for m, r in found.items():
            for c in ("fresh", "pooled"):
                print(
                    f"  {m}, {c}: {r['seeds']} seeds ({r[c]['other_trial']} another trial), "
                    f"{_interval(r[c]['minus_observed'], r['seeds'])}; medians "
                    f"{r['observed_test_median']:.2f} -> {r[c]['test_median']:.2f}"
                )
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
