"""The benchmarks' methods: names, labels and the sampler each one builds.

A *method* is a sampler with its settings, named on the command line of every benchmark
(``--methods``): BOCR's defaults and variants, and Optuna's samplers with default settings.
Every method gets the run's seed, so methods compare side by side, seed by seed.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
import importlib.util
from typing import Any

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.samplers import BaseSampler

from optuna_bocr import BOCRSampler
from optuna_bocr import PAPER_SCHEDULE
from optuna_bocr.sampler._trust_region import EARLIER_IMPROVEMENT

_VARIANTS = (
    "bocr-early",
    "bocr-box",
    "bocr-actual",
    "bocr-trust",
    "bocr-probe",
    "bocr-kl",
    "bocr-width",
    "bocr-small",
    "bocr-key",
    "bocr-key-small",
    "bocr-key-s5",
    "bocr-key-quick",
    "bocr-key-away",
    "bocr-key-actual",
    "bocr-key-ts",
    "bocr-key-any",
    "bocr-key-half",
    "bocr-s5",
    "bocr-quick",
    "bocr-away",
    "bocr-ts",
    "bocr-any",
    "bocr-half",
    "bocr-mean",
    "bocr-flat",
    "bocr-random",
    "bocr-paper",
)
TIED_METHODS = (
    "bocr-one",
    "bocr-cl",
    "bocr-key-one",
    "bocr-key-cl",
    "bocr-one-ard",
    "bocr-key-one-ard",
)
"""The defaults with tied lengthscales after the first stage (see :data:`EXTRA_METHODS`)."""
OUTCOME_METHODS = (
    "bocr-yj",
    "bocr-key-yj",
    "bocr-rank",
    "bocr-key-rank",
    "bocr-yj-late",
    "bocr-key-yj-late",
)
"""The defaults whose GP is fitted on warped values (see :data:`EXTRA_METHODS`)."""
GAIN_METHODS = {f"bocr{key}-yj-gain{pct}": pct / 100 for key in ("", "-key") for pct in (5, 10)}
"""The warped GP with a stage patience that ignores small gains: method -> patience_gain."""
BOCR_VARIANTS = _VARIANTS + TIED_METHODS + OUTCOME_METHODS + tuple(GAIN_METHODS)
"""BOCR variants run only when named (see :data:`EXTRA_METHODS`)."""
BOCR_METHODS = ("bocr", "bocr-clusters", "bocr-direct", "bocr-gradual") + BOCR_VARIANTS
BUDGET_SCALED_METHODS = ("bocr-direct", "bocr-gradual", "bocr-early")
"""BOCR methods whose rollback schedule is scaled to the run's trial budget."""
OPTUNA_METHODS = ("gp", "tpe", "cmaes", "random")
ALL_METHODS = ("bocr", "bocr-clusters", "bocr-direct", "bocr-gradual") + OPTUNA_METHODS
"""The methods that ``--methods all`` runs: BOCR with its defaults, the paper's schedule
(direct and gradual) and clusters only, and Optuna's samplers."""
EXTRA_METHODS = BOCR_VARIANTS + (
    "gp-priors",
    "gp-priors-sobol",
    "gp-bocr-acqf",
    "tpe-uni",
)
"""Methods run only when named: ``bocr-early`` is the paper's gradual rollback with stagnation
checked from 15% / 30% of the budget instead of 40% / 65%; ``bocr-box`` is the defaults but with
each new stage narrowed to the top-k box (``narrow_on_rollback=True``); ``bocr-actual`` is the
defaults but with the GP observing the objective's actual (clipped) values
(``observe_actual=True``); ``bocr-trust`` is the defaults with a trust region in the stages
after the first (``trust_region=True``, first side 0.8, TuRBO's); ``bocr-small`` is that with a
first side of 0.2 (``trust_region_length=0.2``); ``bocr-key`` is ``bocr-trust`` that proposes no
network an earlier trial evaluated (``evaluation_key=PruningObjective.network_key``; pruning
benchmark only); ``bocr-key-small`` is ``bocr-key`` with a first side of 0.2; ``bocr-key-s5``
is ``bocr-key`` with a Sobol design of 5 trials instead of 10 (``n_startup_trials=5``),
``bocr-key-quick`` that with the first stage ending after 6 trials without a new best
(``patience=6``, which counts every trial, the Sobol design's too); ``bocr-s5`` and
``bocr-quick`` are these two without the key (for the synthetic benchmark); the shorter start
of ``bocr-quick`` is the sampler's default since 2026-12-04 (5 Sobol trials, a stage patience
of ``max(6, 2 k)`` counting every trial), so ``bocr-trust`` and ``bocr-key`` now propose what
``bocr-quick`` and ``bocr-key-quick`` do, and their committed rows from before were made with
the earlier defaults (10 Sobol trials, ``max(10, 2 k)`` trials after them); ``bocr-away`` and
``bocr-key-away`` are the defaults (with the key: as the command line runs them) whose trust
region, when it starts again, centres on the best trial outside the box it leaves
(``restart="elsewhere"``); ``bocr-key-actual`` is the defaults with the key whose GP
observes the ratios the budget actually pruned to (``observe_actual=True``), as ``bocr-actual``
without the key; ``bocr-ts`` and ``bocr-key-ts`` are the defaults (without and with the
key) whose trust region ranks its candidates by Thompson sampling
(``acquisition="thompson"``); ``bocr-any`` and ``bocr-key-any`` are the defaults (without and
with the key) whose trust region counts any gain as a new best
(``trust_region_improvement=0``); ``bocr-half`` and ``bocr-key-half`` are those two whose
trust region starts again at half its first side (``trust_region_restart_length=0.4``);
``bocr-mean`` is
``bocr-trust`` whose box centres on, and whose log-EI must beat, the best GP posterior mean of
the observations (``incumbent="mean"``); ``bocr-probe`` is ``bocr-trust`` whose first trial is
where the sensitivity probe's additive model puts the best network (pruning benchmark only;
``benchmarks._probe_start``); ``bocr-kl`` is ``bocr-trust`` with clusters cut from the probe's
divergence curves (pruning benchmark only); ``bocr-width`` is ``bocr-trust`` with clusters of
equally wide layers (``log2`` of the input channels; pruning benchmark only); ``bocr-flat`` is
BOCR's GP with one variable per parameter from the first trial (no clusters) after 10 Sobol
trials (GPSampler's count); ``bocr-random`` is
the defaults with clusters cut from random features (seeded), which measures what the layer
features add; ``bocr-paper`` is the paper's gradual rollback with its schedule for 200
evaluations as published (:data:`~optuna_bocr.PAPER_SCHEDULE`), not scaled to the run's budget,
so its first 100 trials are the start of its 200-trial run and a study extends like the other
methods' (``bocr-gradual`` at 200 trials); ``gp-priors`` is Optuna's GPSampler with BOCR's GP
priors (lengthscales, noise) and nothing else changed, ``gp-priors-sobol`` the same with BOCR's
start-up design (10 trials of a scrambled Sobol design over all parameters instead of random
ones), ``gp-bocr-acqf`` that with BOCR's optimisation of log-EI too (what still differs from
``bocr-flat`` is the GP as fitted); ``tpe-uni`` is Optuna's TPE with independent (univariate)
densities (``tpe`` is its default, multivariate for one objective since Optuna 5);
``bocr-one`` and ``bocr-key-one`` are the defaults (without and with the key) whose GP ties
the lengthscales of the stages after the first into one (``lengthscales="shared"``),
``bocr-cl`` and ``bocr-key-cl`` into one per first-stage cluster
(``lengthscales="clusters"``); ``bocr-one-ard`` and ``bocr-key-one-ard`` are ``bocr-one`` and
``bocr-key-one`` whose trust region's sides are weighted by one lengthscale per variable of a
GP fitted beside the tied one (``box_lengthscales="ard"``; with ``"model"``, as in
``bocr-one``, the box is a cube); ``bocr-yj`` and ``bocr-key-yj`` are the defaults (without
and with the key) whose GP is fitted on the values warped by a fitted Yeo-Johnson power
transform (``outcome_transform="yeo-johnson"``), ``bocr-rank`` and ``bocr-key-rank`` on the
normal quantiles of their ranks (``outcome_transform="rank"``); ``bocr-yj-late`` and
``bocr-key-yj-late`` fit the first stage on standardised values and the later ones on the
warped values (``outcome_transform="yeo-johnson-after-first"``)."""
KNOWN_METHODS = ALL_METHODS + EXTRA_METHODS
METHOD_PACKAGES = {"cmaes": "cmaes"}
"""Packages that a method needs beyond the package's own requirements (method -> module)."""
KEYED_METHODS = (
    "bocr-key",
    "bocr-key-small",
    "bocr-key-s5",
    "bocr-key-quick",
    "bocr-key-away",
    "bocr-key-actual",
    "bocr-key-ts",
    "bocr-key-any",
    "bocr-key-half",
    "bocr-key-one",
    "bocr-key-cl",
    "bocr-key-one-ard",
    "bocr-key-yj",
    "bocr-key-rank",
    "bocr-key-yj-late",
    *(m for m in GAIN_METHODS if "-key" in m),
)
"""BOCR variants that propose no network twice (they need the objective's network key)."""
ANY_GAIN_METHODS = (
    "bocr",
    "bocr-any",
    "bocr-key-any",
    "bocr-half",
    "bocr-key-half",
    *TIED_METHODS,
    *OUTCOME_METHODS,
    *GAIN_METHODS,
)
"""BOCR methods whose trust region counts any gain as a new best (the sampler's default since
2026-12-05); every other BOCR method keeps the earlier 0.1% (``trust_region_improvement=1e-3``),
so that its committed rows reproduce (``bocr`` is the defaults of the day)."""
PRUNING_ONLY_METHODS = ("bocr-probe", "bocr-kl", "bocr-width") + KEYED_METHODS
"""Methods that need a network to probe or measure: the synthetic benchmark refuses them."""

METHOD_LABELS = {
    "bocr": "BOCR defaults",
    "bocr-box": "BOCR defaults, top-k box",
    "bocr-actual": "BOCR defaults, actual values observed",
    "bocr-trust": "BOCR, trust region",
    "bocr-probe": "BOCR, probe start",
    "bocr-kl": "BOCR, probe clusters",
    "bocr-width": "BOCR, width clusters",
    "bocr-small": "BOCR, trust region from 0.2",
    "bocr-key": "BOCR, no network twice",
    "bocr-key-small": "BOCR, no network twice, trust region from 0.2",
    "bocr-key-s5": "BOCR, no network twice, 5 Sobol trials",
    "bocr-key-quick": "BOCR, no network twice, 5 Sobol trials, first stage patience 6",
    "bocr-s5": "BOCR, trust region, 5 Sobol trials",
    "bocr-quick": "BOCR, trust region, 5 Sobol trials, first stage patience 6",
    "bocr-away": "BOCR defaults, restarts elsewhere",
    "bocr-key-away": "BOCR, no network twice, restarts elsewhere",
    "bocr-key-actual": "BOCR, no network twice, budgeted ratios observed",
    "bocr-ts": "BOCR defaults, Thompson sampling",
    "bocr-key-ts": "BOCR, no network twice, Thompson sampling",
    "bocr-any": "BOCR defaults, any gain a new best",
    "bocr-key-any": "BOCR, no network twice, any gain a new best",
    "bocr-half": "BOCR defaults, restarts at half the first side",
    "bocr-key-half": "BOCR, no network twice, restarts at half the first side",
    "bocr-mean": "BOCR, trust region at the best mean",
    "bocr-flat": "BOCR's GP, one variable per parameter",
    "bocr-random": "BOCR defaults, random clusters",
    "bocr-clusters": "BOCR clusters only",
    "bocr-direct": "BOCR paper, direct rollback",
    "bocr-gradual": "BOCR paper, gradual rollback",
    "bocr-paper": "BOCR paper, schedule for 200",
    "bocr-one": "BOCR defaults, one lengthscale after the first stage",
    "bocr-cl": "BOCR defaults, a lengthscale per cluster after the first stage",
    "bocr-key-one": "BOCR, no network twice, one lengthscale after the first stage",
    "bocr-key-cl": "BOCR, no network twice, a lengthscale per cluster after the first stage",
    "bocr-one-ard": "BOCR defaults, one lengthscale after the first stage, box from ARD",
    "bocr-key-one-ard": "BOCR, no network twice, one lengthscale, box from ARD",
    "bocr-yj": "BOCR defaults, GP on Yeo-Johnson-warped values",
    "bocr-key-yj": "BOCR, no network twice, GP on Yeo-Johnson-warped values",
    "bocr-rank": "BOCR defaults, GP on rank quantiles",
    "bocr-key-rank": "BOCR, no network twice, GP on rank quantiles",
    "bocr-yj-late": "BOCR defaults, GP on warped values after the first stage",
    "bocr-key-yj-late": "BOCR, no network twice, GP on warped values after the first stage",
    **{
        m: f"BOCR{', no network twice,' if '-key' in m else ' defaults,'} warped GP, "
        f"patience ignores gains below {round(g * 100)}% of the lead over the median"
        for m, g in GAIN_METHODS.items()
    },
    "bocr-early": "BOCR gradual, early stagnation",
    "gp": "GPSampler",
    "gp-priors": "GPSampler, BOCR's GP priors",
    "gp-priors-sobol": "GPSampler, BOCR's GP priors and Sobol start",
    "gp-bocr-acqf": "GPSampler, BOCR's priors, Sobol start and acquisition optimiser",
    "tpe": "TPESampler",
    "tpe-uni": "TPESampler, univariate",
    "cmaes": "CmaEsSampler",
    "random": "RandomSampler",
}


# -- Samplers --------------------------------------------------------------------------------


def rollback_schedule(n_trials: int, method: str) -> dict[str, Any]:
    """Rollback settings of a BOCR variant, scaled to the trial budget.

    The original BOCR runs use 200 evaluations: direct rollback at evaluation 100 (or from 80
    on after 20 evaluations without a new best); gradual rollback to the bridge clustering at
    100 and to one variable per parameter at 150 (stagnation from 80 and 130). Every number is
    scaled by ``n_trials / 200`` (rounded), so at 200 trials the original schedule
    (:data:`~optuna_bocr.PAPER_SCHEDULE`, each new stage narrowed to the top-k box) is used and
    at 150 trials: direct at 75 (patience 15 from 60), gradual at 75 and 112 (patience 15 from
    60 and 98). ``bocr-early`` is gradual rollback whose stagnation rule may fire from
    evaluation 30 and 60 (scaled) instead of 80 and 130. ``bocr`` is the sampler's defaults
    (not scaled) and ``bocr-box`` the defaults with the top-k box.

    Args:
        n_trials: Trial budget of the run.
        method: One of :data:`BOCR_METHODS`.

    Returns:
        Keyword arguments of BOCRSampler's schedule.
    """
    scale = n_trials / 200.0

    def s(x: int) -> int:
        return max(1, int(round(x * scale)))

    if method == "bocr":  # the sampler's defaults, not scaled
        return {}
    if method == "bocr-box":
        return {"narrow_on_rollback": True}
    if method in ("bocr-actual", "bocr-key-actual"):
        return {"observe_actual": True}
    if method in ("bocr-trust", "bocr-probe", "bocr-kl", "bocr-width", "bocr-key"):
        return {"trust_region": True, "trust_region_length": 0.8}
    if method in ("bocr-key-s5", "bocr-s5"):
        return {"trust_region": True, "trust_region_length": 0.8, "n_startup_trials": 5}
    if method in ("bocr-key-quick", "bocr-quick"):
        return {
            "trust_region": True,
            "trust_region_length": 0.8,
            "n_startup_trials": 5,
            "patience": 6,
        }
    if method in ("bocr-away", "bocr-key-away"):
        return {"restart": "elsewhere"}
    if method in ("bocr-ts", "bocr-key-ts"):
        return {"acquisition": "thompson"}
    if method in ("bocr-any", "bocr-key-any"):
        return {"trust_region_improvement": 0.0}
    if method in ("bocr-half", "bocr-key-half"):
        return {"trust_region_improvement": 0.0, "trust_region_restart_length": 0.4}
    if method in ("bocr-small", "bocr-key-small"):
        return {"trust_region": True, "trust_region_length": 0.2}
    if method == "bocr-mean":
        return {"trust_region": True, "trust_region_length": 0.8, "incumbent": "mean"}
    if method == "bocr-flat":  # GPSampler's 10 start-up trials, as gp-priors-sobol has
        return {"n_startup_trials": 10}
    if method == "bocr-random":
        return {}
    if method == "bocr-clusters":
        return {"rollback_at": None, "patience": None, "patience_from": None}
    if method == "bocr-direct":
        return {
            "rollback_at": (s(100),),
            "patience": s(20),
            "patience_from": (s(80),),
            "patience_gain": 0.0,
            "narrow_on_rollback": True,
            "trust_region": False,
            "n_startup_trials": 10,
        }
    if method == "bocr-paper":
        return dict(PAPER_SCHEDULE)
    if method in ("bocr-one", "bocr-key-one"):
        return {"lengthscales": "shared"}
    if method in ("bocr-one-ard", "bocr-key-one-ard"):
        return {"lengthscales": "shared", "box_lengthscales": "ard"}
    if method in ("bocr-cl", "bocr-key-cl"):
        return {"lengthscales": "clusters"}
    if method in ("bocr-yj", "bocr-key-yj"):
        return {"outcome_transform": "yeo-johnson"}
    if method in ("bocr-rank", "bocr-key-rank"):
        return {"outcome_transform": "rank"}
    if method in ("bocr-yj-late", "bocr-key-yj-late"):
        return {"outcome_transform": "yeo-johnson-after-first"}
    if method in GAIN_METHODS:
        return {"outcome_transform": "yeo-johnson", "patience_gain": GAIN_METHODS[method]}
    if method in ("bocr-gradual", "bocr-early"):
        first, second = s(100), max(s(150), s(100) + 1)  # stay strictly increasing
        start1, start2 = (30, 60) if method == "bocr-early" else (80, 130)
        return {
            "rollback_at": (first, second),
            "patience": s(20),
            "patience_from": (min(s(start1), first), min(max(s(start2), s(start1) + 1), second)),
            "patience_gain": 0.0,
            "narrow_on_rollback": True,
            "trust_region": False,
            "n_startup_trials": 10,
        }
    raise ValueError(f"not a BOCR method: {method!r}")


def make_sampler(
    method: str,
    *,
    seed: int,
    search_space: Mapping[str, FloatDistribution],
    features: Any = None,
    n_trials: int,
    n_clusters: int = 3,
    bridge_clusters: int = 9,
    distance: str | None = None,
    unstructured_fallback: bool = False,
    evaluation_key: Any = None,
) -> tuple[BaseSampler, dict[str, Any]]:
    """Build the sampler of a method with the given seed.

    Args:
        method: One of :data:`KNOWN_METHODS`.
        seed: Seed of the sampler; every method gets the same seeds.
        search_space: Float distributions of the parameters (needed by BOCR).
        features: Per-parameter features for BOCR (``ParameterFeatures`` or mapping).
        n_trials: Trial budget (scales the rollback schedule).
        n_clusters: Clusters of BOCR's first stage.
        bridge_clusters: Clusters of the bridge stage of gradual rollback.
        distance: BOCR's distance (``"eu"``, ``"js"``, ``"st"``) or None for its default.
        unstructured_fallback: BOCR's option: one variable per parameter when the
            features fail its structure test.
        evaluation_key: What the objective evaluates alike (``bocr-key`` needs it: the
            pruning objective's ``network_key``).

    Returns:
        The sampler and a JSON-serialisable dict of its settings (for the run record).
    """
    if method in BOCR_METHODS:
        kwargs: dict[str, Any] = dict(rollback_schedule(n_trials, method))
        if method not in ANY_GAIN_METHODS:  # rows made with the earlier threshold keep it
            kwargs.setdefault("trust_region_improvement", EARLIER_IMPROVEMENT)
        if method not in OUTCOME_METHODS:  # every row before the warp fitted standardised values
            kwargs.setdefault("outcome_transform", "standardize")
        kwargs.setdefault("patience_gain", 0.0)  # any gain a new best for the stage patience
        gradual = method in ("bocr-gradual", "bocr-early", "bocr-paper")
        kwargs["bridge_clusters"] = bridge_clusters if gradual else None
        kwargs.update(
            n_clusters=n_clusters,
            distance=distance,
            seed=seed,
            unstructured_fallback=unstructured_fallback,
        )
        if method == "bocr-flat":
            kwargs.update(n_clusters=len(search_space), rollback_at=None)
        if method in ("bocr-kl", "bocr-width"):  # vectors: divergence curves, widths
            kwargs.update(distance="st")
        if method == "bocr-random":
            rng = np.random.default_rng(seed)
            features = rng.random((len(search_space), 2))
            kwargs.update(distance="st", check_structure=False, unstructured_fallback=False)
        settings = {"class": "BOCRSampler", **kwargs}
        if method in KEYED_METHODS:
            if evaluation_key is None:
                raise ValueError(f"{method} needs the objective's evaluation_key")
            kwargs.update(evaluation_key=evaluation_key)
            settings.update(evaluation_key="network_key")
        sampler: BaseSampler = BOCRSampler(dict(search_space), features=features, **kwargs)
        return sampler, settings
    if method == "gp":
        return optuna.samplers.GPSampler(seed=seed), {"class": "GPSampler", "seed": seed}
    if method == "gp-priors":
        from benchmarks._gp_priors import gp_sampler_with_bocr_priors

        sampler = gp_sampler_with_bocr_priors(seed=seed)
        return sampler, {"class": "GPSampler", "seed": seed, "log_prior": "bocr"}
    if method in ("gp-priors-sobol", "gp-bocr-acqf"):
        from benchmarks._gp_priors import gp_sampler_with_bocr_priors
        from benchmarks._gp_priors import SobolStart
        from benchmarks._gp_priors import use_bocr_acquisition_optimizer

        gp = gp_sampler_with_bocr_priors(seed=seed)
        settings = {"class": "GPSampler", "seed": seed, "log_prior": "bocr", "startup": "sobol"}
        if method == "gp-bocr-acqf":
            use_bocr_acquisition_optimizer(gp, seed=seed)
            settings["acquisition_optimizer"] = "bocr"
        sampler = SobolStart(gp, search_space=search_space, seed=seed, n_startup_trials=10)
        return sampler, settings
    if method == "tpe":
        return optuna.samplers.TPESampler(seed=seed), {"class": "TPESampler", "seed": seed}
    if method == "tpe-uni":
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=False)
        return sampler, {"class": "TPESampler", "seed": seed, "multivariate": False}
    if method == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed), {"class": "CmaEsSampler", "seed": seed}
    if method == "random":
        return optuna.samplers.RandomSampler(seed=seed), {"class": "RandomSampler", "seed": seed}
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(KNOWN_METHODS)}")


def check_packages(methods: Iterable[str]) -> None:
    """Refuse, before any work, a run whose methods or report need a package that is missing.

    Every benchmark's report draws its curves with matplotlib, and ``cmaes`` needs the cmaes
    package; without it CmaEsSampler fails on its first proposal, trial after trial.

    Args:
        methods: The methods of the run.

    Raises:
        SystemExit: One line naming the missing package and the extra that installs it.
    """
    needed = {"matplotlib": "the report's plots"}
    for method in methods:
        if method in METHOD_PACKAGES:
            needed.setdefault(METHOD_PACKAGES[method], f"method {method!r}")
    for module, why in needed.items():
        if importlib.util.find_spec(module) is None:
            raise SystemExit(
                f"the {module} package is missing ({why}): pip install -e '.[benchmark]', "
                "or run the benchmark with the Python that has it"
            )
