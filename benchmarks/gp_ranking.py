"""Can BOCR's GP tell a study's next networks apart? Rank correlation, replayed from trials.

BOCR's per-layer stage proposes where its GP predicts the most; that pays only while the GP
ranks the networks near the incumbent better than chance. This replays that question from
the trials of pruning studies kept in a journal: for each study and each window ``a:b``,
the sampler's GP (:func:`optuna_bocr.sampler._gp.fit_gp`: its model, priors and fit) is
fitted on the first ``a`` complete trials, with every parameter scaled to the unit cube of
its distribution (as the per-layer stage sees them) and the values standardised, and its
posterior mean ranks trials ``a`` to ``b``::

    python -m benchmarks.gp_ranking \\
        --rows benchmarks/results/pruning-resnet56-val5000-cpu/studies.log:bocr-key-any \\
        --prefix pruning-resnet56-flops0.5-val5000-scale --seeds 0-4 \\
        --windows 30:60,50:100,100:150

Printed per method and window: the Spearman correlation between the posterior mean and the
values, per seed and their median, and the interquartile range of the window's values (in
the objective's units: how far apart the networks to be told apart are). ``--inputs
actual`` fits on the ratios the objective pruned to (the trial's ``actual_params`` attr)
instead of the proposed ones; ``--lengthscales one`` or ``clusters`` ties the GP's
lengthscales (``fit_gp(groups=...)``, as ``BOCRSampler(lengthscales="shared" |
"clusters")`` fits them), one for all parameters or one per first-stage cluster;
``--outcome yeo-johnson`` or ``rank`` fits the GP on the values so transformed
(:func:`optuna_bocr.sampler._outcome.transform_outcomes`, as
``BOCRSampler(outcome_transform=...)`` does) instead of standardised.
Every study is loaded, and every argument checked, before the first fit; each fit says
on stderr which study and window it is at (a fit takes seconds, a command minutes).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial
from scipy.stats import spearmanr
import torch

from benchmarks._common import journal_rows
from benchmarks._common import journal_studies
from benchmarks._common import markdown_table
from benchmarks._common import parse_seeds
from optuna_bocr.sampler._gp import fit_gp
from optuna_bocr.sampler._outcome import OUTCOME_TRANSFORMS
from optuna_bocr.sampler._outcome import OutcomeTransform
from optuna_bocr.sampler._outcome import transform_outcomes
from optuna_bocr.sampler._posterior import Posterior


def unit_inputs(trials: list[FrozenTrial], actual: bool = False) -> np.ndarray:
    """``(n, d)`` parameters scaled to ``[0, 1]`` by their distributions (sorted names).

    Args:
        trials: Complete trials with the same float parameters.
        actual: Read the ratios from the ``actual_params`` user attr instead of the params.
    """
    names = sorted(trials[0].distributions)
    rows = []
    for t in trials:
        values = t.user_attrs["actual_params"] if actual else t.params
        row = []
        for n in names:
            d = t.distributions[n]
            if not isinstance(d, FloatDistribution) or d.log:
                raise SystemExit(f"gp_ranking: parameter {n!r} is not a linear float")
            row.append((float(values[n]) - d.low) / (d.high - d.low))
        rows.append(row)
    return np.asarray(rows, dtype=float)


def lengthscale_groups(trials: list[FrozenTrial], mode: str) -> list[int] | None:
    """Group index of each parameter (sorted names) whose lengthscales are tied.

    Args:
        trials: One study's complete trials, in trial order.
        mode: ``"ard"``: one lengthscale per parameter (``None``, the sampler's GP);
            ``"one"``: a single lengthscale; ``"clusters"``: one per group of parameters
            that share a value in the first trial (a BOCR study's first clusters).
    """
    names = sorted(trials[0].distributions)
    if mode == "ard":
        return None
    if mode == "one":
        return [0] * len(names)
    values = [trials[0].params[n] for n in names]
    distinct = sorted(set(values))
    return [distinct.index(v) for v in values]


def window_rank(
    trials: list[FrozenTrial],
    start: int,
    stop: int,
    actual: bool = False,
    lengthscales: str = "ard",
    outcome: OutcomeTransform = "standardize",
) -> tuple[float, float] | None:
    """Spearman of the GP's posterior mean against the values of trials ``start:stop``.

    Args:
        trials: One study's complete trials, in trial order.
        start: The GP is fitted on ``trials[:start]``.
        stop: It ranks ``trials[start:stop]``.
        actual: Fit and rank on the ``actual_params`` ratios.
        lengthscales: ``"ard"`` (the sampler's GP), ``"one"`` or ``"clusters"``
            (:func:`lengthscale_groups`).
        outcome: What the GP is fitted on (:func:`transform_outcomes`).

    Returns:
        ``(spearman, interquartile range of the ranked values)``, or ``None`` when the study
        has fewer than ``stop`` trials.
    """
    if len(trials) < stop:
        return None
    x = unit_inputs(trials[:stop], actual)
    y = np.asarray([t.value for t in trials[:stop]], dtype=float)
    fit_y = transform_outcomes(y[:start], outcome)
    groups = lengthscale_groups(trials, lengthscales)
    fitted = fit_gp(x[:start], fit_y, groups=None if groups is None else np.asarray(groups))[0]
    with torch.no_grad():
        mean, _ = Posterior(fitted)(torch.as_tensor(x[start:], dtype=torch.float64))
    rho = float(spearmanr(mean.numpy(), y[start:]).statistic)
    q1, q3 = np.quantile(y[start:], [0.25, 0.75])
    return rho, float(q3 - q1)


def _windows(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        a, sep, b = part.partition(":")
        if not sep or not a.isdigit() or not b.isdigit() or not 2 <= int(a) < int(b):
            raise SystemExit(f"gp_ranking: a window is START:STOP, 2 <= START < STOP: {part!r}")
        out.append((int(a), int(b)))
    return out


def _row(method: str, ranks: dict[int, tuple[float, float] | None], window: str) -> list[str]:
    have = {s: r for s, r in ranks.items() if r is not None}
    if not have:
        return [method, window, "-", "-", "-"]
    rho = float(np.median([r[0] for r in have.values()]))
    iqr = float(np.median([r[1] for r in have.values()]))
    per_seed = ", ".join(f"{s}: {r[0]:+.2f}" for s, r in have.items())
    return [method, window, f"{rho:+.2f}", per_seed, f"{iqr:.2f}"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", action="append", required=True, help="JOURNAL:METHOD[,METHOD...]")
    p.add_argument("--prefix", required=True, help="study names are <prefix>-<method>-seed<s>")
    p.add_argument("--seeds", default="0-4", help="seeds: N (0..N-1), a-b or a,b,...")
    p.add_argument("--windows", default="50:100", help="START:STOP[,START:STOP...]")
    p.add_argument("--inputs", choices=["proposed", "actual"], default="proposed")
    p.add_argument(
        "--lengthscales",
        choices=["ard", "one", "clusters"],
        default="ard",
        help="ard: one per parameter, the sampler's GP; one: a single lengthscale; clusters: "
        "one per group of parameters sharing a value in the first trial",
    )
    p.add_argument(
        "--outcome",
        choices=OUTCOME_TRANSFORMS,
        default="standardize",
        help="what the GP is fitted on: the values standardised (the sampler's default), "
        "warped by a fitted Yeo-Johnson transform, or their rank quantiles",
    )
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    windows = _windows(args.windows)
    seeds = parse_seeds(args.seeds)
    specs = [journal_rows(spec, "gp_ranking") for spec in args.rows]
    actual = args.inputs == "actual"
    loaded = []
    for path, methods in specs:
        for method in methods:
            studies = journal_studies(path, args.prefix, method, seeds)
            if not studies:
                raise SystemExit(f"gp_ranking: no study {args.prefix}-{method}-seed<s> in {path}")
            loaded.append((method, studies))
    rows = []
    for method, studies in loaded:
        for a, b in windows:
            ranks = {}
            for s, trials in studies.items():
                print(f"gp_ranking: {method} seed {s}, fit on {a}, rank to {b}", file=sys.stderr)
                ranks[s] = window_rank(trials, a, b, actual, args.lengthscales, args.outcome)
            rows.append(_row(method, ranks, f"{a}:{b}"))
    header = ["method", "fit on : rank to", "median Spearman", "per seed", "median IQR"]
    print(
        f"GP ranking of the next trials, inputs: {args.inputs} ratios, "
        f"lengthscales: {args.lengthscales}, values: {args.outcome}"
    )
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
