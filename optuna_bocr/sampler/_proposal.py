"""One BOCR proposal: from the history in the storage to a claimed point of the current stage.

Per trial: read the history once, decide the stage (opening the next one if the schedule
says so), map the observations into the stage's unit cube, then either take the next point
of the Sobol design or fit the GP and rank candidates by log-EI, and claim the best
candidate that no other trial has.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import math
from typing import NamedTuple
from typing import TYPE_CHECKING

import numpy as np
import optuna
from optuna.trial import FrozenTrial
from scipy.stats import qmc
import torch

from optuna_bocr.sampler import _storage
from optuna_bocr.sampler._acquisition import optimize_log_ei
from optuna_bocr.sampler._evaluation_key import TakenKeys
from optuna_bocr.sampler._gp import fit_gp
from optuna_bocr.sampler._history import History
from optuna_bocr.sampler._history import read_history
from optuna_bocr.sampler._outcome import OutcomeTransform
from optuna_bocr.sampler._outcome import transform_outcomes
from optuna_bocr.sampler._plan import Plan
from optuna_bocr.sampler._posterior import Posterior
from optuna_bocr.sampler._schedule import rollback_bounds
from optuna_bocr.sampler._schedule import should_advance
from optuna_bocr.sampler._space import StageSpace
from optuna_bocr.sampler._thompson import thompson_candidates
from optuna_bocr.sampler._trust_region import MAX_LENGTH
from optuna_bocr.sampler._trust_region import TrustRegion

if TYPE_CHECKING:
    from optuna.study import Study

_logger = optuna.logging.get_logger("optuna_bocr.sampler._sampler")

DUPLICATE_TOL = 1e-3
"""Two points closer than this in every coordinate (unit cube of the stage) are the same."""
_MAX_MOVED_PROPOSALS = 50
"""At most this many moved proposals (those of the latest trials) are observed."""
_MOVED_TOL = 1e-6
"""A proposal farther than this (unit cube of the stage) from its actual point is observed too."""
_N_RANDOM_FALLBACK = 16
_MAX_STAGE_RETRIES = 3
"""At most this many proposals per trial when other workers keep opening stages meanwhile."""
_N_KEY_CHECKS = 64
"""With an evaluation key, the box is widened when none of its best this many candidates is
a new evaluation."""


class Proposal(NamedTuple):
    """A claimed point: per-parameter values, its stage and its cluster values."""

    params: np.ndarray
    stage: int
    cluster_values: np.ndarray


def propose(
    plan: Plan, study: Study, trial: FrozenTrial, trials: list[FrozenTrial], sign: float
) -> Proposal:
    """Propose (and store) the point of ``trial``.

    Another worker may open a stage, on a trial numbered below ``trial``, after ``trials``
    were read: the claim's re-read of the storage notices, and the point is proposed again
    from that re-read, so that no trial proposes in a stage that an earlier trial closed
    (at most :data:`_MAX_STAGE_RETRIES` times; then the last point stays).

    Args:
        plan: The sampler's settings.
        study: The study.
        trial: The trial to propose for.
        trials: Every trial of the study, as just read from the storage.
        sign: ``1.0`` to maximise, ``-1.0`` to minimise.
    """
    for _ in range(_MAX_STAGE_RETRIES):
        proposal, fresh = _propose_once(plan, study, trial, trials, sign)
        if fresh is None:
            return proposal
        _logger.debug(f"Trial {trial.number}: a stage opened meanwhile; proposing again.")
        trials = fresh
    return proposal


def _propose_once(
    plan: Plan, study: Study, trial: FrozenTrial, trials: list[FrozenTrial], sign: float
) -> tuple[Proposal, list[FrozenTrial] | None]:
    """One proposal from ``trials``, and the re-read trials if a stage opened meanwhile."""
    number = trial.number
    history = read_history(trials, plan.names, number, sign, observe_actual=plan.observe_actual)
    stage, stage_start, space = _current_stage(plan, history)
    if should_advance(
        plan.schedule,
        stage=stage,
        stage_start=stage_start,
        trial_number=number,
        history=list(zip(history.obs_numbers, history.obs_values.tolist(), strict=True)),
    ) and bool(history.obs_complete.any()):
        stage, stage_start = stage + 1, number
        space = _open_stage(plan, history, stage)
        _storage.write_stage_opening(study, trial, stage, space.lower, space.upper)
        _logger.info(
            f"Trial {number} opens BOCR stage {stage} ({plan.schedule.sizes[stage]} variables)."
        )

    if plan.observe_actual:
        x_obs, y_obs = _with_moved_proposals(space, history, since=stage_start)
    else:
        x_obs, y_obs = space.to_unit(history.obs_params), history.obs_values
    x_pending = space.to_unit(history.pending)
    rng = np.random.default_rng([plan.seed, number])
    taken = None
    if plan.evaluation_keys is not None:
        rows = np.concatenate([history.obs_params, history.proposals_except(set())])
        taken = TakenKeys(plan.evaluation_keys, rows)
    if number < plan.n_startup_trials or len(y_obs) == 0:
        candidates = _sobol_candidates(plan.seed + stage, space.dim, number, rng)
    else:
        # The first rows of x_obs are the observations, in trial-number order.
        trust = _trust_region(plan, history, stage, stage_start, x_obs[: len(history.obs_values)])
        try:
            candidates, theta = _gp_candidates(
                x_obs,
                y_obs,
                x_pending,
                history.warm_starts.get(stage),
                rng,
                trust,
                by_mean=plan.incumbent == "mean",
                thompson=plan.acquisition == "thompson",
                groups=plan.groups_of(stage),
                box_ard=plan.box_lengthscales == "ard",
                outcome=plan.outcome_of(stage),
                is_new=None if taken is None else lambda u: not taken(space.unit_to_params(u)),
            )
            _storage.write_gp_fit(study, trial, stage, theta)
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as e:
            _logger.warning(
                f"Trial {number}: the GP step failed ({e!r}); proposing a random point."
            )
            candidates = rng.random((_N_RANDOM_FALLBACK, space.dim))
    known = np.concatenate([x_obs, x_pending, space.to_unit(history.proposals_except(set()))])
    if taken is not None:  # last resort, if other workers claim every new candidate first
        candidates = np.concatenate([candidates, rng.random((_N_KEY_CHECKS, space.dim))])
    unit, fresh = _claim(study, trial, candidates, known, space, history, taken)
    proposal = Proposal(space.unit_to_params(unit), stage, space.unit_to_clusters(unit))
    moved = fresh is not None and _stage_moved(fresh, number, stage, stage_start)
    return proposal, (fresh if moved else None)


def _stage_moved(trials: list[FrozenTrial], number: int, stage: int, stage_start: int) -> bool:
    """Whether ``trials`` hold a stage opening below ``number`` that the proposal missed.

    That is a later stage than ``stage``, or ``stage`` opened by a lower-numbered trial
    than ``stage_start`` (two workers opened it at once; the lowest number wins).
    """
    openings = _storage.stage_openings([t for t in trials if t.number < number])
    if not openings:
        return False
    if max(openings) > stage:
        return True
    # Not among them: this trial opened ``stage`` itself.
    return stage in openings and openings[stage][0] != stage_start


def _current_stage(plan: Plan, history: History) -> tuple[int, int, StageSpace]:
    """Latest opened stage, the trial number that opened it and its space."""
    if not history.openings:
        return 0, 0, plan.spaces[0]
    stage = max(history.openings)
    start, lower, upper = history.openings[stage]
    return stage, start, plan.spaces[stage].with_bounds(lower, upper)


def _open_stage(plan: Plan, history: History, stage: int) -> StageSpace:
    """The space of a new stage: bounds from the top-k COMPLETE trials' cluster values."""
    if not plan.narrow_on_rollback:
        return plan.spaces[stage]
    complete = np.flatnonzero(history.obs_complete)
    order = sorted(complete, key=lambda i: (-history.obs_values[i], history.obs_numbers[i]))
    space = plan.spaces[stage]
    top = space.cluster_values(history.obs_params[order[: plan.top_k]])
    lower, upper = rollback_bounds(top, space.cluster_lows, space.cluster_highs)
    return space.with_bounds(lower, upper)


def _trust_region(
    plan: Plan, history: History, stage: int, stage_start: int, points: np.ndarray
) -> TrustRegion | None:
    """The trust region of a stage after the first (``plan.trust_region``), else ``None``.

    Args:
        points: ``(n_obs, dim)`` the observations in the stage's unit cube.
    """
    if not plan.trust_region or stage == 0:
        return None
    first = int(np.sum(np.asarray(history.obs_numbers) < stage_start))
    if plan.restart == "elsewhere":
        return TrustRegion.replay_elsewhere(
            history.obs_values,
            points,
            first,
            points.shape[1],
            init_length=plan.trust_region_length,
            improvement=plan.trust_region_improvement,
            restart_length=plan.trust_region_restart_length,
        )
    before = history.obs_values[:first]
    return TrustRegion.replay(
        float(before.max()) if len(before) else -math.inf,
        history.obs_values[first:],
        points.shape[1],
        init_length=plan.trust_region_length,
        improvement=plan.trust_region_improvement,
        restart_length=plan.trust_region_restart_length,
    )


def _sobol_candidates(seed: int, dim: int, number: int, rng: np.random.Generator) -> np.ndarray:
    """Point ``number`` of the stage's scrambled Sobol design, then random fallbacks."""
    m = max(0, math.ceil(math.log2(number + 1)))
    sobol = qmc.Sobol(dim, scramble=True, seed=seed)
    design = sobol.random_base2(m) if m > 0 else sobol.random(1)
    return np.concatenate([design[number : number + 1], rng.random((_N_RANDOM_FALLBACK, dim))])


def _with_moved_proposals(
    space: StageSpace, history: History, *, since: int
) -> tuple[np.ndarray, np.ndarray]:
    """The observations in the stage's unit cube, plus the proposals the objective moved.

    An objective that replaces what it is given by what it can use (the pruning objective
    clips ratios to a FLOPs budget) returns the same value for the proposal as for the
    actual point. Observing only the actual point leaves the region proposed into
    unexplored for the GP, and log-EI keeps proposing there, the objective keeps moving the
    proposals back, and the search stalls; with the proposal observed too the GP learns that
    the region gives the moved result. Points that coincide in the stage's space (clipping
    that only moved values inside a cluster) are not repeated.

    Only trials numbered ``since`` (the start of the current stage) or later add their
    proposal, and only the latest :data:`_MAX_MOVED_PROPOSALS` of them: the acquisition
    works in the current stage's space, near where it proposed lately, and all the
    proposals would up to double the GP's data (and quadruple the cost of its fit).

    Returns:
        ``(x, y)``: unit-cube inputs and oriented values.
    """
    x_obs = space.to_unit(history.obs_params)
    y_obs = history.obs_values
    rows = [i for i, n in enumerate(history.obs_numbers) if n >= since and n in history.proposals]
    if not rows:
        return x_obs, y_obs
    x_prop = space.to_unit(np.stack([history.proposals[history.obs_numbers[i]] for i in rows]))
    moved = np.max(np.abs(x_prop - x_obs[rows]), axis=1) > _MOVED_TOL
    if not moved.any():
        return x_obs, y_obs
    extra_x = x_prop[moved][-_MAX_MOVED_PROPOSALS:]
    extra_y = y_obs[np.asarray(rows)[moved]][-_MAX_MOVED_PROPOSALS:]
    return np.concatenate([x_obs, extra_x]), np.concatenate([y_obs, extra_y])


def _gp_candidates(
    x_obs: np.ndarray,
    y_obs: np.ndarray,
    x_pending: np.ndarray,
    warm_start: np.ndarray | None,
    rng: np.random.Generator,
    trust: TrustRegion | None = None,
    *,
    by_mean: bool = False,
    thompson: bool = False,
    groups: np.ndarray | None = None,
    box_ard: bool = False,
    outcome: OutcomeTransform = "standardize",
    is_new: Callable[[np.ndarray], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit the GP, fantasise the running trials and rank candidates by log-EI.

    With ``trust``, the candidates lie in its box around the incumbent, each side weighted
    by the fitted lengthscales. The incumbent is the best observation, or with ``by_mean``
    (only with ``trust``) the observation with the best posterior mean, whose mean is then
    what log-EI must beat: a value that got lucky on a finite validation split sits above
    the GP's mean there (by about the fitted noise), and a box centred on it keeps failing
    to beat it. With ``thompson`` (only with ``trust``), one joint posterior draw over
    candidates in the box ranks them instead of log-EI. With ``is_new`` (whether a
    unit-cube point is a new evaluation), a box whose best candidates are all known
    evaluations (narrower than what the objective tells apart) is doubled until they are
    not, up to the largest side. With ``groups``, the lengthscales of each group of
    dimensions are tied into one (:func:`~optuna_bocr.sampler._gp.fit_gp`); with
    ``box_ard`` too, a GP with one lengthscale per dimension is fitted beside it (from
    ``warm_start``) for the box's weights, and its hyperparameters are the ones returned
    (the tied fit starts from its default each time). ``outcome`` is what the GP is fitted
    on (:func:`~optuna_bocr.sampler._outcome.transform_outcomes`).

    Returns:
        The candidates (best first) and the fitted GP hyperparameters.
    """
    y_std = transform_outcomes(y_obs, outcome)
    if groups is not None and box_ard and trust is not None:
        model = fit_gp(x_obs, y_std, groups=groups)[0]
        box_model, theta = fit_gp(x_obs, y_std, warm_start)
    else:
        model, theta = fit_gp(x_obs, y_std, warm_start, groups=groups)
        box_model = model
    base = Posterior(model)
    posterior, fantasies = base.with_fantasies(x_pending)
    scores = y_std
    if trust is not None and by_mean:
        with torch.no_grad():
            scores = base(torch.from_numpy(x_obs))[0].numpy()
    inside = np.all((x_obs >= 0.0) & (x_obs <= 1.0), axis=1)
    if trust is not None and trust.center is not None:  # a run restarted elsewhere
        chosen = trust.center
        inside &= np.arange(len(x_obs)) == chosen
    else:
        chosen = int(np.argmax(scores))
    incumbent = float(np.max(np.concatenate([scores[[chosen]], fantasies])))
    best_inside = int(np.argmax(np.where(inside, scores, -np.inf)))
    warm = x_obs[[best_inside]] if inside.any() else x_obs[:0]
    lengthscales = box_model.hyperparameters.lengthscale.detach().numpy()
    center = x_obs[chosen]

    def search(region: TrustRegion | None) -> np.ndarray:
        if region is None:
            box = None
        else:
            box = region.box(center, lengthscales)
            if thompson:
                return thompson_candidates(posterior, center=center, box=box, rng=rng)
        return optimize_log_ei(
            posterior, best=incumbent, dim=x_obs.shape[1], rng=rng, warm_starts=warm, box=box
        )[0]

    candidates = search(trust)
    while trust is not None and is_new is not None and trust.length < MAX_LENGTH:
        if any(is_new(u) for u in candidates[:_N_KEY_CHECKS]):
            break
        trust = dataclasses.replace(trust, length=min(2.0 * trust.length, MAX_LENGTH))
        candidates = search(trust)
    return candidates, theta


def _claim(
    study: Study,
    trial: FrozenTrial,
    candidates: np.ndarray,
    known: np.ndarray,
    space: StageSpace,
    history: History,
    taken: TakenKeys | None = None,
) -> tuple[np.ndarray, list[FrozenTrial] | None]:
    """Store the best candidate that no other trial has as this trial's proposal.

    Workers that propose at the same moment from the same history find the same optimum.
    So each candidate is written to the storage first and compared with the other trials'
    proposals afterwards: of two trials that claim the same point at once, the one that
    reads last sees the other's claim and moves on to its next candidate (both may), and no
    two trials keep one point. In one process nothing else writes in between and this is
    the best candidate not near ``known`` (the observations, the running trials and every
    stored proposal) and, with ``taken``, not evaluated like any of them.

    Returns:
        The claimed point, in the stage's unit cube, and the trials as last re-read
        (``None`` if nothing was re-read).
    """
    n_params = history.obs_params.shape[1]
    fresh: list[FrozenTrial] | None = None
    for u in candidates:
        if _near(known, u) or (taken is not None and taken(space.unit_to_params(u))):
            continue
        _storage.write_proposal(study, trial, space.unit_to_params(u))
        # Re-read: another worker may have proposed (and even finished) meanwhile. Trials
        # that were finished at the first read cannot have changed their proposal.
        fresh = _storage.read_trials(study)
        others = [
            p
            for t in fresh
            if t.number != trial.number and t.number not in history.settled
            for p in [_storage.stored_proposal(t, n_params)]
            if p is not None
        ]
        if not others:
            return u, fresh
        others_unit = space.to_unit(np.asarray(others))
        if taken is not None:
            taken.add(others)
        if not _near(others_unit, u) and not (
            taken is not None and taken(space.unit_to_params(u))
        ):
            return u, fresh
        known = np.concatenate([known, others_unit])
    u = candidates[0]  # Every candidate is taken: repeat the best one.
    _storage.write_proposal(study, trial, space.unit_to_params(u))
    return u, fresh


def _near(points: np.ndarray, u: np.ndarray) -> bool:
    """Whether a row of ``points`` is within the duplicate tolerance of ``u`` (max norm)."""
    return len(points) > 0 and bool(np.min(np.max(np.abs(points - u), axis=1)) <= DUPLICATE_TOL)
