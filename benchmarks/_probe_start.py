"""What the sensitivity probe gives BOCR in the benchmark: a first trial, or clusters.

``bocr-probe`` starts from the probe's best network; ``bocr-kl`` cuts BOCR's clusters from
the probe's divergence curves instead of the L1 densities. The probe
(:func:`optuna_bocr.pruning.layer_sensitivity`) prunes each layer alone to a few ratios on a
few validation images. Summing its per-layer losses gives an additive model of
the accuracy lost by a network pruned to given ratios; the first trial is the proposal whose
budgeted ratios (the objective's budget rule applied) lose the least under that model, and
BOCR's search goes on from there. The probe's cost, in evaluations of the whole validation
split, is stored on the study (:data:`PROBE_KEY`) with its curves, to charge to the method's
trial budget when it is compared with samplers that need no probe.

``bocr-kl`` probes each layer at :data:`PROBE_RATIOS` on :data:`CLUSTER_PROBE_IMAGES` images:
the divergence from the unpruned network's outputs is measured image by image, so a hundred
images resolve what the accuracy lost cannot on a thousand.
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
CLUSTER_PROBE_IMAGES = 100
"""Validation images per probe evaluation of ``bocr-kl``."""
N_CANDIDATES = 2048
"""Sobol proposals scored under the additive model."""
PROBE_KEY = "bench:probe"
"""Study user attr: the probe's record (cost, curves, the start it chose)."""

_CACHE: dict[str, tuple[dict[str, float], dict[str, Any]]] = {}
_FEATURES: dict[str, tuple[Any, dict[str, Any]]] = {}


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


def _probe(args: argparse.Namespace, task: str, n_images: int) -> Any:
    from optuna_bocr.pruning import layer_sensitivity

    splits = get_splits(args)
    return layer_sensitivity(
        trained_model(args, task),
        calibration=splits.train,
        validation=splits.val,
        ratios=PROBE_RATIOS,
        n_images=n_images,
        n_calibration_images=args.n_calibration_images,
        device=args.device,
        seed=0,
    )


def _record(sens: Any, full_validation_images: int) -> dict[str, Any]:
    return {
        "probe_ratios": list(sens.ratios),
        "probe_images": sens.n_images,
        "probe_evaluations": sens.n_evaluations,
        "probe_cost_in_evaluations": sens.cost_in_evaluations(full_validation_images),
        "probe_seconds": sens.seconds,
        "drops": {n: d.tolist() for n, d in sens.drops.items()},
        "divergences": {n: d.tolist() for n, d in sens.divergences.items()},
    }


def probe_features(args: argparse.Namespace, task: str) -> tuple[Any, dict[str, Any]]:
    """The divergence curves as BOCR's features, and the probe's record, once per process."""
    if task not in _FEATURES:
        sens = _probe(args, task, CLUSTER_PROBE_IMAGES)
        record = _record(sens, len(get_splits(args).val))
        print(
            f"[probe] {task}: {sens.n_evaluations} evaluations of {sens.n_images} images in "
            f"{sens.seconds:.0f} s ({record['probe_cost_in_evaluations']:.1f} full evaluations)",
            flush=True,
        )
        _FEATURES[task] = (sens.features("divergence"), record)
    return _FEATURES[task]


def probe_start(args: argparse.Namespace, task: str) -> tuple[dict[str, float], dict[str, Any]]:
    """The first trial's ratios and the probe's record (cost, curves), once per process."""
    if task in _CACHE:
        return _CACHE[task]
    objective = get_objective(args, task)
    splits = get_splits(args)
    sens = _probe(args, task, PROBE_IMAGES)
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
        **_record(sens, len(splits.val)),
        "allocation_seconds": time.perf_counter() - t0,
        "predicted_loss": float(min(losses)),
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
