"""How many trials of a pruning benchmark evaluated a network an earlier trial already had?

Each layer keeps a whole number of channels, so ratios a fraction of a channel apart prune
to the same network and score the same: a trial that repeats a network spends an evaluation
and learns nothing. For every study of the given methods and network in a benchmark's
storage, each COMPLETE trial's kept channels are computed from the ratios it actually
evaluated (the user attr ``actual_params``, after the budget rule) and the network's layer
widths, and compared with the earlier trials'.

Example::

    python -m benchmarks.repeats --task resnet20 \\
        --storage benchmarks/results/pruning-resnet20-val5000/studies.log \\
        --methods bocr-trust,bocr-key,cmaes,tpe --n-trials 200
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

import optuna
from optuna.trial import TrialState
import torch

from benchmarks._pruning_setup import get_storage
from benchmarks._pruning_setup import method_and_seed
from benchmarks._pruning_setup import TASKS
from optuna_bocr.keys import ACTUAL_PARAMS_KEY
from optuna_bocr.models import build_model
from optuna_bocr.pruning._flops import keep_count
from optuna_bocr.pruning._network import PrunableNetwork


def layer_widths(task: str) -> dict[str, int]:
    """Input channels of each prunable layer of the task's network (Fashion-MNIST input)."""
    model = build_model(TASKS[task]["model"], num_classes=10, in_channels=1, seed=0)
    net = PrunableNetwork(
        model, torch.zeros(1, 1, 32, 32), flops_ratio=1.0, lbound=TASKS[task]["lbound"]
    )
    return {layer.name: layer.channels for layer in net.layers}


def repeats(
    storage: optuna.storages.BaseStorage,
    task: str,
    methods: list[str],
    *,
    n_trials: int | None = None,
    late_from: int = 100,
) -> dict[str, list[dict[str, Any]]]:
    """Per method, one row per study: trials, repeated networks, repeats from ``late_from`` on.

    Args:
        storage: The benchmark's storage.
        task: Network of the studies (``resnet20``, ``resnet56``, ``mobilenet_v1``).
        methods: Methods whose studies to read.
        n_trials: Read each study's first ``n_trials`` COMPLETE trials only.
        late_from: Trial number from which a repeat also counts as late.
    """
    widths = layer_widths(task)
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        parsed = method_and_seed(summary.study_name)
        if parsed is None or parsed[0] not in methods or f"-{task}-" not in summary.study_name:
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))[:n_trials]
        seen: set[tuple[int, ...]] = set()
        repeated = late = 0
        for t in trials:
            actual = t.user_attrs[ACTUAL_PARAMS_KEY]
            key = tuple(keep_count(c, actual[name]) for name, c in widths.items())
            if key in seen:
                repeated += 1
                late += t.number >= late_from
            seen.add(key)
        found[parsed[0]].append(
            {"seed": parsed[1], "trials": len(trials), "repeats": repeated, "late": late}
        )
    return {m: sorted(found[m], key=lambda r: r["seed"]) for m in methods if m in found}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True, help="the benchmark's storage")
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="the studies' network")
    p.add_argument("--methods", required=True, help="comma-separated methods")
    p.add_argument("--n-trials", type=int, default=None, help="each study's first N trials")
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    methods = [m for m in args.methods.split(",") if m]
    rows = repeats(get_storage(args.storage), args.task, methods, n_trials=args.n_trials)
    if not rows:
        p.error(f"no study of {', '.join(methods)} on {args.task} in {args.storage}")
    print("| method | studies | trials | repeated networks (per seed) | of them from trial 100 |")
    print("|---|---|---|---|---|")
    for method, studies in rows.items():
        per_seed = ", ".join(str(r["repeats"]) for r in studies)
        print(
            f"| {method} | {len(studies)} | {sum(r['trials'] for r in studies)} "
            f"| {sum(r['repeats'] for r in studies)} ({per_seed}) "
            f"| {sum(r['late'] for r in studies)} |"
        )


if __name__ == "__main__":
    main()
