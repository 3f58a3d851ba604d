"""What the selection measures share: finished studies to measure, results cached per study.

The measures of :mod:`benchmarks.selection` each run on the first ``--n-trials`` COMPLETE
trials of the pruning benchmark's finished studies, cache what they found per study in one
JSON file (so an interrupted run resumes), and summarise paired per-seed differences with
the pruning report's bootstrap.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from typing import TYPE_CHECKING

import numpy as np
import optuna
from optuna.trial import TrialState

from benchmarks import _common as common
from benchmarks._pruning_setup import get_storage
from benchmarks._pruning_setup import study_name

if TYPE_CHECKING:
    from collections.abc import Iterator

    from optuna.trial import FrozenTrial


def paired_interval(diffs: list[float]) -> dict[str, float]:
    """Mean of per-seed paired ``diffs``, its 95% bootstrap interval and the count above zero.

    The pruning report's statistic (:func:`benchmarks._common.paired_difference`, 4000
    resamples) on differences that are already paired.
    """
    found = common.paired_difference(
        {i: np.array([d]) for i, d in enumerate(diffs)},
        {i: np.zeros(1) for i in range(len(diffs))},
        1,
    )
    if found is None:
        raise ValueError("no paired differences to summarise")
    mean, low, high, ahead, _ = found
    return {"mean": mean, "low": low, "high": high, "ahead": ahead}


def finished_studies(
    args: argparse.Namespace, methods: list[str], seeds: list[int], done: dict[str, Any]
) -> Iterator[tuple[str, str, int, list[FrozenTrial]]]:
    """``(cache key, method, seed, first --n-trials COMPLETE trials)`` of each study to run.

    Studies cached in ``done`` and missing studies are passed over; a study with fewer
    COMPLETE trials is skipped with a line saying so.
    """
    storage = get_storage(args.storage)
    for method in methods:
        for seed in seeds:
            name = study_name(args, args.task, method, seed)
            key = f"{name}|{budget(args.n_trials, args.test_size)}"
            if key in done:
                continue
            try:
                study = optuna.load_study(study_name=name, storage=storage)
            except KeyError:
                continue
            trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            trials = trials[: args.n_trials]
            if len(trials) < args.n_trials:
                print(f"[skip] {name}: {len(trials)} COMPLETE trials of {args.n_trials}")
                continue
            yield key, method, seed, trials


def cached(path: Path, section: str) -> dict[str, Any]:
    return json.loads(path.read_text()).get(section, {}) if path.exists() else {}


def budget(n_trials: int, test_size: int | None = None) -> str:
    """The cache key's tail: the trials looked at, and the test images when not all."""
    return f"{n_trials}" + (f"|test{test_size}" if test_size else "")


def results_by_method(
    done: dict[str, Any], n_trials: int, test_size: int | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The cached results of ``done`` at ``n_trials`` trials (and ``test_size`` test images),
    grouped by their ``"method"``."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for key, r in done.items():
        if key.split("|", 1)[1] == budget(n_trials, test_size):
            by_method.setdefault(r["method"], []).append(r)
    return by_method


def write_results(path: Path, update: dict[str, Any]) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(update)
    common.write_json(path, data)
