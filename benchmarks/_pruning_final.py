"""The pruning benchmark's test-split evaluations: each method's best model (tested, then
fine-tuned) and, with ``--seed-tests``, each seed's best trial (tested as it is), so methods
can be compared on held-out images, paired by seed, and not only on the validation score
they were selected by."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from benchmarks import _common as common
from benchmarks._pruning_setup import get_objective
from benchmarks._pruning_setup import get_splits
from benchmarks._pruning_setup import get_storage
from benchmarks._pruning_setup import study_name
from benchmarks._pruning_setup import trained_model

# -- Final evaluation -------------------------------------------------------------------------


def _value(trial: optuna.trial.FrozenTrial) -> float:
    return -math.inf if trial.value is None else float(trial.value)


def test_split(args: argparse.Namespace) -> Any:
    """The test split, or its first ``--test-size`` images."""
    test = get_splits(args).test
    return test.subset(range(min(args.test_size, len(test)))) if args.test_size else test


def _best_trial(
    args: argparse.Namespace,
    storage: optuna.storages.BaseStorage,
    task: str,
    method: str,
    seed: int,
) -> tuple[str, optuna.trial.FrozenTrial] | None:
    """The study's name and its best trial among its first ``--n-trials`` COMPLETE ones."""
    name = study_name(args, task, method, seed)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))[: args.n_trials]
    return (name, max(trials, key=_value)) if trials else None


def final_eval(args: argparse.Namespace, task: str, methods: list[str], seeds: list[int]) -> None:
    """Test accuracy of each method's best model, before and after a short fine-tune.

    Cached in ``out/final_<task>.json`` per (method, study, trial, fine-tune settings).
    """
    import torch

    from optuna_bocr.pruning import count_flops
    from optuna_bocr.training import evaluate
    from optuna_bocr.training import train

    path = Path(args.out) / f"final_{task}.json"
    cache: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    storage = get_storage(args.storage)
    splits = get_splits(args)
    test = test_split(args)
    for method in methods:
        best: tuple[float, str, optuna.trial.FrozenTrial] | None = None
        for seed in seeds:
            found = _best_trial(args, storage, task, method, seed)
            if found is not None:
                name, t = found
                value = _value(t)
                if best is None or value > best[0]:
                    best = (value, name, t)
        if best is None:
            continue
        key = (  # "flops|": entries cached before the FLOPs were recorded are redone
            f"flops|{method}|{best[1]}|{best[2].number}|ft{args.finetune_epochs:g}"
            f"-m{args.finetune_max_images}-lr{args.finetune_lr:g}|test{args.test_size}"
        )
        if cache.get(method, {}).get("key") == key:
            continue
        objective = get_objective(args, task)
        if "baseline_test_top1" not in cache or cache.get("test_size") != args.test_size:
            model = trained_model(args, task)
            cache["baseline_test_top1"] = evaluate(model, test, device=args.device)[0]
            cache["baseline_val_top1"] = objective.baseline_top1
            cache["test_size"] = args.test_size
        t0 = time.perf_counter()
        pruned = objective.export(best[2])
        flops = count_flops(pruned, (1, *objective.input_size)) / objective.original_flops
        top1 = evaluate(pruned, test, device=args.device)[0]
        ft_top1 = None
        if args.finetune_epochs > 0:
            torch.manual_seed(0)
            train(
                pruned,
                splits.train,
                epochs=args.finetune_epochs,
                lr=args.finetune_lr,
                device=args.device,
                seed=0,
                max_images=args.finetune_max_images,
                progress=False,
            )
            ft_top1 = evaluate(pruned, test, device=args.device)[0]
        cache[method] = {
            "key": key,
            "study": best[1],
            "trial": best[2].number,
            "val_top1": best[0],
            "flops_ratio": flops,
            "test_top1": top1,
            "test_top1_finetuned": ft_top1,
            "seconds": time.perf_counter() - t0,
        }
        print(
            f"[final] {task} {method}: best val {best[0]:.2f}% ({best[1]} #{best[2].number}), "
            f"FLOPs {flops:.3f} of the unpruned model, test {top1:.2f}%"
            + (f", after fine-tune {ft_top1:.2f}%" if ft_top1 is not None else ""),
            flush=True,
        )
        common.write_json(path, cache)


def seed_tests(args: argparse.Namespace, task: str, methods: list[str], seeds: list[int]) -> None:
    """Test top-1 of the best trial of every (method, seed) study, without fine-tuning.

    The best validation score of a search is the maximum of many scores on the same images,
    so part of it is luck on those images; the test split says how good the chosen network
    is. Cached in ``out/final_<task>.json`` under ``"seeds"``, per study, trial and test size.
    """
    from optuna_bocr.training import evaluate

    path = Path(args.out) / f"final_{task}.json"
    cache: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    per_seed: dict[str, Any] = cache.setdefault("seeds", {})
    storage = get_storage(args.storage)
    test = test_split(args)
    for method in methods:
        for seed in seeds:
            found = _best_trial(args, storage, task, method, seed)
            if found is None:
                continue
            name, best = found
            key = f"{best.number}|test{args.test_size}"
            if per_seed.get(name, {}).get("key") == key:
                continue
            objective = get_objective(args, task)
            t0 = time.perf_counter()
            top1 = evaluate(objective.export(best), test, device=args.device)[0]
            per_seed[name] = {
                "key": key,
                "method": method,
                "seed": seed,
                "trial": best.number,
                "val_top1": _value(best),
                "test_top1": top1,
                "seconds": time.perf_counter() - t0,
            }
            print(
                f"[test] {name}: trial {best.number}, val {_value(best):.2f}%, test {top1:.2f}%",
                flush=True,
            )
            common.write_json(path, cache)
