"""Does the sensitivity probe's additive model rank the networks that a search compares?

The probe (:func:`optuna_bocr.pruning.layer_sensitivity`, recorded on a study of the pruning
benchmark under :data:`~benchmarks._probe_start.PROBE_KEY` by ``bocr-probe`` and ``bocr-kl``)
gives each layer a curve of the accuracy lost (and of the divergence of the outputs) when it
alone is pruned. Summed over the layers at a trial's budgeted ratios
(:func:`~benchmarks._probe_start.predicted_loss`), the curves predict how much that network
loses: an additive model, the prior mean a GP could search around. A prior mean helps only
where it ranks the candidates the acquisition weighs against each other. This prints the
Spearman correlation between the model's prediction (negated: less loss ranks higher) and
each COMPLETE trial's validation top-1, over all trials of the given methods' studies and
over their best quarter (where a search spends its later trials).

Example::

    python -m benchmarks.probe_ranking \\
        --storage benchmarks/results/pruning-resnet20-scale/studies.log \\
        --probe-method bocr-kl --methods bocr-trust,cmaes,gp
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from scipy.stats import spearmanr

from benchmarks._probe_start import predicted_loss
from benchmarks._probe_start import PROBE_KEY
from benchmarks._pruning_setup import get_storage
from benchmarks._pruning_setup import method_and_seed
from optuna_bocr.keys import ACTUAL_PARAMS_KEY

TOP_FRACTION = 0.25
"""The best trials (this fraction, by validation top-1) form the second correlation."""


def rank_correlations(
    storage: optuna.storages.BaseStorage, probe_method: str, methods: list[str]
) -> dict[str, Any]:
    """Spearman correlations of the additive model with the trials' top-1.

    Raises:
        ValueError: No study of ``probe_method`` carries a probe record, or the methods'
            studies have no COMPLETE trial with its budgeted ratios.
    """
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    record = None
    for s in sorted(summaries, key=lambda s: s.study_name):
        found = method_and_seed(s.study_name)
        if found is not None and found[0] == probe_method and PROBE_KEY in s.user_attrs:
            record = s.user_attrs[PROBE_KEY]
            break
    if record is None:
        raise ValueError(
            f"no study of method {probe_method!r} in this storage records a probe "
            f"({PROBE_KEY!r}); run benchmarks.pruning with --methods bocr-kl or bocr-probe"
        )
    ratios = tuple(float(r) for r in record["probe_ratios"])
    curves = {"points lost": record["drops"]}
    if "divergences" in record:
        curves["divergence"] = record["divergences"]
    predicted: dict[str, list[float]] = {m: [] for m in curves}
    values: list[float] = []
    for s in summaries:
        found = method_and_seed(s.study_name)
        if found is None or found[0] not in methods:
            continue
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            actual = t.user_attrs.get(ACTUAL_PARAMS_KEY)
            if not actual or t.value is None:
                continue
            values.append(float(t.value))
            for measure, curve in curves.items():
                arrays = {n: np.asarray(v, dtype=float) for n, v in curve.items()}
                predicted[measure].append(predicted_loss(arrays, ratios, actual))
    if len(values) < 4:
        raise ValueError(
            f"the studies of {', '.join(methods)} have {len(values)} COMPLETE trials with "
            f"budgeted ratios ({ACTUAL_PARAMS_KEY!r}); at least 4 are needed"
        )
    y = np.asarray(values)
    top = y >= np.quantile(y, 1.0 - TOP_FRACTION)
    out: dict[str, Any] = {
        "probe_method": probe_method,
        "probe_images": record.get("probe_images"),
        "probe_ratios": list(ratios),
        "methods": methods,
        "n_trials": int(len(y)),
        "n_top": int(top.sum()),
    }
    for measure, pred in predicted.items():
        score = -np.asarray(pred)
        out[measure] = {
            "spearman_all": float(spearmanr(score, y).statistic),
            "spearman_top": float(spearmanr(score[top], y[top]).statistic),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", required=True, help="the pruning benchmark's storage")
    p.add_argument("--probe-method", default="bocr-kl", help="the method whose probe to use")
    p.add_argument("--methods", default="bocr-trust,cmaes,gp", help="comma-separated")
    p.add_argument("--out", default=None, help="also write the result here (JSON)")
    args = p.parse_args(argv)
    if "://" not in args.storage and not Path(args.storage).is_file():
        p.error(f"no storage file {args.storage}: give the journal file of a pruning run")
    methods = [m for m in args.methods.split(",") if m]
    if not methods:
        p.error("--methods is empty: name at least one method, e.g. cmaes")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        result = rank_correlations(get_storage(args.storage), args.probe_method, methods)
    except ValueError as e:
        p.error(str(e))
    print(
        f"{result['n_trials']} trials of {', '.join(methods)}; probe of {args.probe_method} "
        f"({result['probe_images']} images, ratios {result['probe_ratios']})"
    )
    for measure in ("points lost", "divergence"):
        if measure in result:
            r = result[measure]
            print(
                f"  additive model of the {measure}: Spearman {r['spearman_all']:+.2f} over all "
                f"trials, {r['spearman_top']:+.2f} over the best {result['n_top']}"
            )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
