"""Which trust-region sides find new bests? BOCR's finer stages, replayed per trial.

For every study of the given BOCR methods in a storage, the trust region of the stages
after the first (:class:`~optuna_bocr.sampler._trust_region.TrustRegion`) is replayed
from the trials in order, as the sampler replays it, so each trial of those stages gets the
side of the box it was proposed in. Grouped by that side, it prints how many trials were
proposed, how far they landed below the best trial before them (median, in the objective's
units) and how many were a new best (beating it by the sampler's relative threshold). Beside
them, the noise of the GP that proposed those trials (its fitted noise standard deviation,
stored on each trial, in the objective's units): how much of a best value the GP reads as
luck. Each side's trials and new bests after the box first started again (it shrank
below its smallest side) are counted apart too: those a restart spends.

The side depends on the first side the studies ran with (``--init-length``) and the side
they started again at (``--restart-length``): the journal does not record them.

Example::

    python -m benchmarks.box_yield \\
        --storage benchmarks/results/pruning-resnet56-scale/studies.log \\
        --methods bocr-trust --init-length 0.8 --n-trials 100
"""

from __future__ import annotations

import argparse
from collections import defaultdict
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState
import torch

from benchmarks import _common as common
from benchmarks._pruning_setup import get_storage
from benchmarks._pruning_setup import method_and_seed
from optuna_bocr.keys import STAGE_KEY
from optuna_bocr.sampler._gp import Hyperparameters
from optuna_bocr.sampler._storage import gp_fit
from optuna_bocr.sampler._trust_region import EARLIER_IMPROVEMENT
from optuna_bocr.sampler._trust_region import INIT_LENGTH
from optuna_bocr.sampler._trust_region import TrustRegion


def box_yield(
    storage: optuna.storages.BaseStorage,
    methods: list[str],
    *,
    init_length: float,
    improvement: float = EARLIER_IMPROVEMENT,
    n_trials: int | None = None,
    restart_length: float | None = None,
) -> dict[str, Any]:
    """Trials, median distance below the best and new bests, per side of the box.

    Args:
        storage: The benchmark's storage.
        methods: BOCR methods whose studies to read.
        init_length: First side of the box the studies ran with.
        improvement: Relative gain that counted as a new best in them (the sampler's
            ``trust_region_improvement``; 1e-3 for the studies run before 2026-12-05).
        n_trials: Read each study as it stood after this many trials (``None``: all).
        restart_length: Side the studies' box started again at (``None``: the first side).

    Raises:
        ValueError: The methods' studies have no trial in a stage after the first.
    """
    below: dict[float, list[float]] = defaultdict(list)
    new_best: dict[float, int] = defaultdict(int)
    restarted: dict[float, list[int]] = defaultdict(lambda: [0, 0])  # trials, new bests
    noise: list[float] = []
    n_studies = 0
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        found = method_and_seed(s.study_name)
        if found is None or found[0] not in methods:
            continue
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        done = [
            t
            for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
            if t.state == TrialState.COMPLETE
            and t.value is not None
            and (n_trials is None or t.number < n_trials)
        ]
        stages = [int(t.user_attrs.get(STAGE_KEY, 0)) for t in done]
        if not done or max(stages) == 0:
            continue
        n_studies += 1
        values = [sign * float(t.value) for t in done]  # type: ignore[arg-type]
        last = max(stages)
        dim = len(done[0].params)
        start = stages.index(last)
        best_before = max(values[:start]) if start else -math.inf
        for i in range(start, len(done)):
            state = TrustRegion.replay(
                best_before,
                values[start:i],
                dim,
                init_length=init_length,
                improvement=improvement,
                restart_length=restart_length,
            )
            side = round(state.length, 6)
            best = max(values[:i]) if i else -math.inf
            below[side].append(values[i] - best)
            gain = int(values[i] > best + improvement * abs(best))
            new_best[side] += gain
            if state.restarts:
                restarted[side][0] += 1
                restarted[side][1] += gain
            fit = gp_fit(done[i])
            if fit is not None:
                # The sampler standardises the values it observed; its noise is in those units.
                variance = float(Hyperparameters.from_theta(torch.from_numpy(fit[1])).noise)
                noise.append(math.sqrt(variance) * float(np.std(values[:i])))
    if not below:
        raise ValueError(
            f"no study of {', '.join(methods)} in this storage has trials in a stage after "
            "the first; run benchmarks.pruning with a BOCR method that rolls back"
        )
    rows = [
        {
            "side": side,
            "trials": len(below[side]),
            "median_below_best": float(np.median(below[side])),
            "new_bests": new_best[side],
            "trials_after_restart": restarted[side][0],
            "new_bests_after_restart": restarted[side][1],
        }
        for side in sorted(below)
    ]
    return {
        "methods": methods,
        "init_length": init_length,
        "restart_length": restart_length,
        "n_trials": n_trials,
        "studies": n_studies,
        "rows": rows,
        "gp_noise": _quartiles(noise),
    }


def _quartiles(values: list[float]) -> dict[str, float | int] | None:
    """Number, median and quartiles of ``values``; ``None`` if empty."""
    if not values:
        return None
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return {"trials": len(values), "median": float(q50), "q25": float(q25), "q75": float(q75)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", required=True, help="the benchmark's storage")
    p.add_argument("--methods", default="bocr-trust", help="comma-separated BOCR methods")
    p.add_argument(
        "--init-length",
        type=float,
        default=INIT_LENGTH,
        help=f"first side of the box the studies ran with (default {INIT_LENGTH})",
    )
    p.add_argument(
        "--restart-length",
        type=float,
        default=None,
        help="side the studies' box started again at (default: the first side)",
    )
    p.add_argument(
        "--improvement",
        type=float,
        default=EARLIER_IMPROVEMENT,
        help="relative gain that counted as a new best in the studies "
        f"(default {EARLIER_IMPROVEMENT}, that of the studies before 2026-12-05)",
    )
    p.add_argument(
        "--n-trials", type=int, default=None, help="read each study's first N trials only"
    )
    p.add_argument("--out", default=None, help="also write the result here (JSON)")
    args = p.parse_args(argv)
    if "://" not in args.storage and not Path(args.storage).is_file():
        p.error(f"no storage file {args.storage}: give the journal file of a benchmark run")
    methods = [m for m in args.methods.split(",") if m]
    if not methods or any(not m.startswith("bocr") for m in methods):
        p.error("--methods must name BOCR methods, e.g. bocr-trust")
    if not 0.0 < args.init_length <= 2.0:
        p.error(f"--init-length must be in (0, 2], got {args.init_length}")
    if args.restart_length is not None and not 0.0 < args.restart_length <= 2.0:
        p.error(f"--restart-length must be in (0, 2], got {args.restart_length}")
    if not 0.0 <= args.improvement < 1.0:
        p.error(f"--improvement must be in [0, 1), got {args.improvement}")
    if args.n_trials is not None and args.n_trials < 1:
        p.error(f"--n-trials must be at least 1, got {args.n_trials}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        result = box_yield(
            get_storage(args.storage),
            methods,
            init_length=args.init_length,
            improvement=args.improvement,
            n_trials=args.n_trials,
            restart_length=args.restart_length,
        )
    except ValueError as e:
        p.error(str(e))
    upto = f", first {args.n_trials} trials" if args.n_trials else ""
    print(
        f"{result['studies']} studies of {', '.join(methods)}{upto}, first side {args.init_length}"
    )
    print(
        common.markdown_table(
            [
                "side",
                "trials",
                "median below the best",
                "new bests",
                "trials after a restart",
                "new bests after a restart",
            ],
            [
                [
                    f"{r['side']:g}",
                    str(r["trials"]),
                    f"{r['median_below_best']:+.2f}",
                    str(r["new_bests"]),
                    str(r["trials_after_restart"]),
                    str(r["new_bests_after_restart"]),
                ]
                for r in result["rows"]
            ],
        )
    )
    noise = result["gp_noise"]
    if noise is not None:
        print(
            f"GP noise (standard deviation, objective's units) over {noise['trials']} trials: "
            f"median {noise['median']:.2f}, quartiles {noise['q25']:.2f}-{noise['q75']:.2f}"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
