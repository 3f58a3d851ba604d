"""The sampler's fixed settings, checked and built once from BOCRSampler's arguments."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from optuna.distributions import FloatDistribution

from optuna_bocr.sampler._arguments import check_choice
from optuna_bocr.sampler._arguments import check_count
from optuna_bocr.sampler._arguments import check_flags
from optuna_bocr.sampler._arguments import check_incumbent
from optuna_bocr.sampler._evaluation_key import check_evaluation_key
from optuna_bocr.sampler._evaluation_key import EvaluationKey
from optuna_bocr.sampler._evaluation_key import EvaluationKeys
from optuna_bocr.sampler._features import ParameterFeatures
from optuna_bocr.sampler._features import parse_features
from optuna_bocr.sampler._outcome import OUTCOME_CHOICES
from optuna_bocr.sampler._outcome import OutcomeChoice
from optuna_bocr.sampler._outcome import OutcomeTransform
from optuna_bocr.sampler._outcome import stage_outcome
from optuna_bocr.sampler._schedule import make_schedule
from optuna_bocr.sampler._schedule import Schedule
from optuna_bocr.sampler._space import StageSpace
from optuna_bocr.sampler._stages import cluster_stages
from optuna_bocr.sampler._stages import StageClusters
from optuna_bocr.sampler._trust_region import check_improvement
from optuna_bocr.sampler._trust_region import check_length
from optuna_bocr.sampler._trust_region import INIT_LENGTH
from optuna_bocr.sampler._trust_region import RELATIVE_IMPROVEMENT

LENGTHSCALE_MODES = ("ard", "shared", "clusters")
"""``BOCRSampler``'s ``lengthscales`` values (:func:`tied_lengthscales`)."""


@dataclass(frozen=True)
class Plan:
    """The fixed settings of a sampler that every proposal uses.

    Attributes:
        names: Parameter names, ``search_space`` order.
        schedule: When the stages change.
        spaces: Each stage's space with its default (whole-range) bounds.
        top_k: Number of best COMPLETE trials that set the bounds of a new stage.
        n_startup_trials: Trials with a number below this come from the Sobol design.
        seed: Seed of every random choice (with the trial number).
        narrow_on_rollback: Whether a new stage's bounds are the range of the top-k trials
            (else the user's whole range).
        observe_actual: Whether the GP observes the objective's actual values
            (:data:`~optuna_bocr.keys.ACTUAL_PARAMS_KEY`) and the moved proposals, instead of
            the trials' params.
        trust_region: Whether the stages after the first confine the acquisition to a
            trust region around the incumbent (:mod:`~optuna_bocr.sampler._trust_region`).
        trust_region_length: Side of the trust region's box when a stage opens (unit cube
            of the stage, before the lengthscale weighting).
        trust_region_restart_length: Its side when it starts again after shrinking;
            ``None``: ``trust_region_length``.
        trust_region_improvement: A value is a new best for the trust region when it beats
            the best by more than this fraction of ``|best|``.
        incumbent: In the trust region's stages, what the box centres on and log-EI must
            beat: ``"observed"``, the best observation; ``"mean"``, the observation with the
            best GP posterior mean, and that mean.
        restart: Where the trust region's box centres when it starts again: ``"incumbent"``
            (the best observation, as before) or ``"elsewhere"`` (the best observation
            outside the box it leaves; :meth:`TrustRegion.replay_elsewhere`).
        acquisition: What ranks the candidates in a trust region's box: ``"log_ei"``
            (optimised) or ``"thompson"`` (one posterior draw;
            :mod:`~optuna_bocr.sampler._thompson`).
        evaluation_keys: What the objective evaluates alike (a point whose key a trial
            already has is not proposed while a new one is found); ``None``: every point
            is a new evaluation.
        lengthscale_groups: Per stage, the group of each variable whose GP lengthscales
            are tied into one (:func:`~optuna_bocr.sampler._gp.fit_gp`); ``None``: one
            lengthscale per variable. Empty: ``None`` in every stage.
        box_lengthscales: With tied lengthscales, what weights the trust region's sides:
            ``"model"``, the tied ones; ``"ard"``, one per variable, fitted beside.
        outcome_transform: What the GP is fitted on, per stage
            (:func:`~optuna_bocr.sampler._outcome.stage_outcome`).
    """

    names: tuple[str, ...]
    schedule: Schedule
    spaces: tuple[StageSpace, ...]
    top_k: int
    n_startup_trials: int
    seed: int
    narrow_on_rollback: bool = True
    observe_actual: bool = False
    trust_region: bool = False
    trust_region_length: float = INIT_LENGTH
    trust_region_restart_length: float | None = None
    trust_region_improvement: float = RELATIVE_IMPROVEMENT
    incumbent: Literal["observed", "mean"] = "observed"
    restart: Literal["incumbent", "elsewhere"] = "incumbent"
    acquisition: Literal["log_ei", "thompson"] = "log_ei"
    evaluation_keys: EvaluationKeys | None = None
    lengthscale_groups: tuple[tuple[int, ...] | None, ...] = ()
    box_lengthscales: Literal["model", "ard"] = "model"
    outcome_transform: OutcomeChoice = "standardize"

    def outcome_of(self, stage: int) -> OutcomeTransform:
        """What the GP of ``stage`` is fitted on."""
        return stage_outcome(self.outcome_transform, stage, self.schedule.n_stages)

    def groups_of(self, stage: int) -> np.ndarray | None:
        """The tied lengthscales' groups of ``stage`` (``None``: one per variable)."""
        if stage >= len(self.lengthscale_groups):
            return None
        groups = self.lengthscale_groups[stage]
        return None if groups is None else np.asarray(groups, dtype=np.intp)


def make_plan(
    search_space: Mapping[str, FloatDistribution],
    *,
    features: ParameterFeatures | Mapping[str, ArrayLike] | ArrayLike,
    distance: Literal["eu", "js", "st"] | None,
    n_clusters: int,
    bridge_clusters: int | Sequence[int] | None,
    rollback_at: Sequence[int] | None,
    patience: int | Literal["auto"] | None,
    patience_from: Sequence[int] | None,
    patience_gain: float,
    narrow_on_rollback: bool,
    observe_actual: bool,
    trust_region: bool,
    trust_region_length: float,
    trust_region_restart_length: float | None,
    trust_region_improvement: float,
    incumbent: Literal["observed", "mean"],
    restart: Literal["incumbent", "elsewhere"],
    acquisition: Literal["log_ei", "thompson"],
    lengthscales: Literal["ard", "shared", "clusters"],
    box_lengthscales: Literal["model", "ard"],
    outcome_transform: OutcomeChoice,
    evaluation_key: EvaluationKey | None,
    top_k: int,
    n_startup_trials: int,
    seed: int | None,
    check_structure: bool,
    unstructured_fallback: bool,
) -> tuple[Plan, StageClusters]:
    """Check :class:`~optuna_bocr.BOCRSampler`'s arguments and build its plan.

    Args:
        search_space: The validated search space (float distributions, in order).
        features: See :class:`~optuna_bocr.BOCRSampler`; so are the other arguments.

    Returns:
        The plan, and the stages the features clustered into (with the structure test's
        p-value).

    Raises:
        TypeError, ValueError: An argument is wrong (one line saying which and why).
    """
    names = list(search_space)
    feats = parse_features(features, names)
    if distance is None:
        distance = "eu" if feats.samples else "st"
    top_k = check_count("top_k", top_k, minimum=1)
    n_startup_trials = check_count("n_startup_trials", n_startup_trials, minimum=0)
    check_flags(
        {
            "check_structure": check_structure,
            "unstructured_fallback": unstructured_fallback,
            "narrow_on_rollback": narrow_on_rollback,
            "observe_actual": observe_actual,
            "trust_region": trust_region,
        }
    )
    trust_region_length = check_length(trust_region_length)
    if trust_region_restart_length is not None:
        trust_region_restart_length = check_length(
            trust_region_restart_length, "trust_region_restart_length"
        )
    trust_region_improvement = check_improvement(trust_region_improvement)
    evaluation_key = check_evaluation_key(evaluation_key)
    check_incumbent(incumbent, trust_region=trust_region)
    check_choice("restart", restart, ("incumbent", "elsewhere"))
    check_choice("acquisition", acquisition, ("log_ei", "thompson"))
    check_choice("lengthscales", lengthscales, LENGTHSCALE_MODES)
    check_choice("box_lengthscales", box_lengthscales, ("model", "ard"))
    check_choice("outcome_transform", outcome_transform, OUTCOME_CHOICES)
    schedule = make_schedule(
        dims=len(names),
        n_clusters=n_clusters,
        bridge_clusters=bridge_clusters,
        rollback_at=rollback_at,
        patience=patience,
        patience_from=patience_from,
        patience_gain=patience_gain,
    )
    stages = cluster_stages(
        feats,
        names,
        distance=distance,
        schedule=schedule,
        check_structure=check_structure,
        unstructured_fallback=unstructured_fallback,
    )
    lows = np.array([d.low for d in search_space.values()])
    highs = np.array([d.high for d in search_space.values()])
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    plan = Plan(
        names=tuple(names),
        schedule=stages.schedule,
        spaces=tuple(StageSpace.from_clusters(g, lows, highs) for g in stages.clusters),
        top_k=top_k,
        n_startup_trials=n_startup_trials,
        seed=int(seed),
        narrow_on_rollback=narrow_on_rollback,
        observe_actual=observe_actual,
        trust_region=trust_region,
        trust_region_length=trust_region_length,
        trust_region_restart_length=trust_region_restart_length,
        trust_region_improvement=trust_region_improvement,
        incumbent=incumbent,
        restart=restart,
        acquisition=acquisition,
        evaluation_keys=None if evaluation_key is None else EvaluationKeys(evaluation_key, names),
        lengthscale_groups=tied_lengthscales(lengthscales, stages.clusters),
        box_lengthscales=box_lengthscales,
        outcome_transform=outcome_transform,
    )
    return plan, stages


def tied_lengthscales(
    mode: Literal["ard", "shared", "clusters"], clusters: list[list[list[int]]]
) -> tuple[tuple[int, ...] | None, ...]:
    """Per stage, the group of each variable whose lengthscales are tied.

    The first stage keeps one lengthscale per variable. In each later stage, ``"shared"``
    ties all of them; ``"clusters"`` ties the variables whose parameters lie in one cluster
    of the first stage (the stages cut one Ward tree, so each later cluster lies inside one
    first-stage cluster); ``"ard"`` ties none.

    Args:
        mode: ``"ard"``, ``"shared"`` or ``"clusters"``.
        clusters: Per stage, its clusters (sorted parameter indices).
    """
    if mode == "ard":
        return tuple(None for _ in clusters)
    first = {p: i for i, members in enumerate(clusters[0]) for p in members}
    out: list[tuple[int, ...] | None] = [None]
    for stage in clusters[1:]:
        if mode == "shared":
            out.append(tuple(0 for _ in stage))
            continue
        owners = [first[members[0]] for members in stage]
        renumber = {c: i for i, c in enumerate(dict.fromkeys(owners))}
        out.append(tuple(renumber[c] for c in owners))
    return tuple(out)
