"""Re-scoring the best distinct networks of finished studies on images the search never scored.

Per study, the ``--top-k`` best distinct networks (distinct kept channels, as
``optuna-bocr export --top-k`` takes them) are scored on the validation images beyond the
search's ``--val-size`` (up to ``--rescore-size``), and the best on them, or on all the
validation images together, is tested against the best observation.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import time
from typing import Any

import numpy as np

from benchmarks._pruning_final import test_split
from benchmarks._pruning_setup import get_objective
from benchmarks._pruning_setup import get_splits
from benchmarks._selection_studies import cached
from benchmarks._selection_studies import finished_studies
from benchmarks._selection_studies import paired_interval
from benchmarks._selection_studies import results_by_method
from benchmarks._selection_studies import write_results
from optuna_bocr.pruning import rescore_top_k
from optuna_bocr.pruning import Rescored


def rescore(args: argparse.Namespace, methods: list[str], seeds: list[int]) -> dict[str, Any]:
    """Per study, the top-k trials scored on the unseen validation images; choices tested.

    Two choices: the best on the unseen images alone (``fresh``) and the best on every
    validation image, the search's and the unseen ones together (``pooled``). Cached in
    ``--out`` per study and ``--n-trials``. The top-k and the fresh scores are
    :func:`optuna_bocr.pruning.rescore_top_k`'s, the choice ``optuna-bocr export --top-k``
    ships.
    """
    from optuna_bocr.training import evaluate

    path = Path(args.out)
    done = cached(path, "rescore")
    fresh_set = test = None
    n_fresh = args.rescore_size - args.val_size

    def pooled(r: Rescored) -> float:
        return (r.search_top1 * args.val_size + r.rescore_top1 * n_fresh) / args.rescore_size

    for key, method, seed, trials in finished_studies(args, methods, seeds, done):
        objective = get_objective(args, args.task)
        if fresh_set is None:
            wide = get_splits(argparse.Namespace(**{**vars(args), "val_size": args.rescore_size}))
            fresh_set = wide.val.subset(range(args.val_size, args.rescore_size))
            test = test_split(args)
        assert test is not None
        t0 = time.perf_counter()
        found = rescore_top_k(trials, objective, fresh_set, k=args.top_k, device=args.device)
        by_search = sorted(found, key=lambda r: (-r.search_top1, r.trial_number))
        # Ties go to the better search score, as export's choice (rescore_top_k) does.
        chosen = {
            "observed": by_search[0],
            "fresh": found[0],
            "pooled": max(by_search, key=pooled),
        }
        tested = {
            r.trial_number: evaluate(r.model, test, device=args.device)[0] for r in chosen.values()
        }
        done[key] = {
            "method": method,
            "seed": seed,
            "top_k": [
                {"trial": r.trial_number, "val": r.search_top1, "fresh": r.rescore_top1}
                for r in by_search
            ],
            "chosen": {c: r.trial_number for c, r in chosen.items()},
            "test": {str(n): v for n, v in tested.items()},
            "seconds": time.perf_counter() - t0,
        }
        print(
            f"[rescore] {key.split('|')[0]}: "
            + ", ".join(
                f"{c} trial {r.trial_number} (test {tested[r.trial_number]:.2f})"
                for c, r in chosen.items()
            ),
            flush=True,
        )
        write_results(path, {"rescore": done})
    return done


def rescore_summary(
    done: dict[str, Any], n_trials: int, test_size: int | None = None
) -> dict[str, dict[str, Any]]:
    """Per method and choice: test top-1 minus the best observation's, paired by seed."""
    by_method = results_by_method(done, n_trials, test_size)
    out: dict[str, dict[str, Any]] = {}
    for m, rs in sorted(by_method.items()):
        obs = [r["test"][str(r["chosen"]["observed"])] for r in rs]
        out[m] = {"seeds": len(rs), "observed_test_median": float(np.median(obs))}
        for choice in ("fresh", "pooled"):
            got = [r["test"][str(r["chosen"][choice])] for r in rs]
            out[m][choice] = {
                "other_trial": sum(r["chosen"][choice] != r["chosen"]["observed"] for r in rs),
                "test_median": float(np.median(got)),
                "minus_observed": paired_interval([g - o for g, o in zip(got, obs, strict=True)]),
            }
    return out
