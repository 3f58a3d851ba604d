"""A first trial chosen by the sensitivity probe (benchmark method ``bocr-probe``).

The probe (:func:`optuna_bocr.pruning.layer_sensitivity`) prunes each layer alone to a few
ratios on a few validation images. Summing its per-layer losses gives an additive model of
the accuracy lost by a network pruned to given ratios; the first trial is the proposal whose
budgeted ratios (the objective's budget rule applied) lose the least under that model, and
BOCR's search goes on from there. The probe's cost, in evaluations of the whole validation
split, is stored on the study (:data:`PROBE_KEY`) with its curves, to charge to the method's
trial budget when it is compared with samplers that need no probe.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from scipy.stats import qmc

from benchmarks._pruning_setup import get_objective
from benchmarks._pruning_setup import get_splits
from benchmarks._pruning_setup import TASKS
from benchmarks._pruning_setup import trained_model

PROBE_RATIOS = (0.25, 0.5)
"""Ratios each layer is probed at: two points of the curve, enough for an additive model."""
PROBE_IMAGES = 250
"""Validation images per probe evaluation (the first ones of the split)."""
N_CANDIDATES = 2048
"""Sobol proposals scored under the additive model."""
PROBE_KEY = "bench:probe"
"""Study user attr: the probe's record (cost, curves, the start it chose)."""

_CACHE: dict[str, tuple[dict[str, float], dict[str, Any]]] = {}


def predicted_loss(
    drops: dict[str, np.ndarray], ratios: tuple[float, ...], actual: dict[str, float]
) -> float:
    """Points lost by a network pruned to ``actual``, as the sum of per-layer losses.

    Each layer's loss is interpolated linearly between the probed ratios and 0 at ratio 1,
    extrapolated below the smallest probed ratio along the last segment, and clipped at 0.
    """
    xs = np.array([*ratios, 1.0])
    total = 0.0
    for name, r in actual.items():
        ys = np.maximum(np.append(drops[name], 0.0), 0.0)
        if r < xs[0]:
            slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
            total += max(ys[0] + slope * (r - xs[0]), ys[0])
        else:
            total += float(np.interp(r, xs, ys))
    return total


def probe_start(args: argparse.Namespace, task: str) -> tuple[dict[str, float], dict[str, Any]]:
    """The first trial's ratios and the probe's record (cost, curves), once per process."""
    if task in _CACHE:
        return _CACHE[task]
    from optuna_bocr.pruning import layer_sensitivity

    objective = get_objective(args, task)
    splits = get_splits(args)
    sens = layer_sensitivity(
        trained_model(args, task),
        calibration=splits.train,
        validation=splits.val,
        ratios=PROBE_RATIOS,
        n_images=PROBE_IMAGES,
        n_calibration_images=args.n_calibration_images,
        device=args.device,
        seed=0,
    )
    t0 = time.perf_counter()
    names = objective.layer_names
    lbound = float(TASKS[task]["lbound"])
    unit = qmc.Sobol(len(names), scramble=True, seed=0).random(N_CANDIDATES)
    centre = np.full(len(names), 0.5 * (1.0 + lbound))
    proposals = np.vstack([centre, lbound + (1.0 - lbound) * unit])
    budgeted = [objective.clip(dict(zip(names, p.tolist(), strict=True))) for p in proposals]
    losses = [predicted_loss(sens.drops, sens.ratios, actual) for actual in budgeted]
    best = proposals[int(np.argmin(losses))]
    start = {n: float(v) for n, v in zip(names, best, strict=True)}
    record = {
        "probe_ratios": list(sens.ratios),
        "probe_images": sens.n_images,
        "probe_evaluations": sens.n_evaluations,
        "probe_cost_in_evaluations": sens.cost_in_evaluations(len(splits.val)),
        "probe_seconds": sens.seconds,
        "allocation_seconds": time.perf_counter() - t0,
        "predicted_loss": float(min(losses)),
        "drops": {n: d.tolist() for n, d in sens.drops.items()},
        "start": start,
    }
    print(
        f"[probe] {task}: {sens.n_evaluations} evaluations of {sens.n_images} images in "
        f"{sens.seconds:.0f} s ({record['probe_cost_in_evaluations']:.1f} full evaluations); "
        f"start predicted to lose {min(losses):.1f} points",
        flush=True,
    )
    _CACHE[task] = (start, record)
    return _CACHE[task]
