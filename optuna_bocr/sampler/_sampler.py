"""BOCRSampler: clustered GP Bayesian optimisation with rollback, as an Optuna sampler."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
import math
from typing import Any
from typing import Literal
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import FloatDistribution
from optuna.samplers import BaseSampler
from optuna.samplers import RandomSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial
from optuna.trial import TrialState
from scipy.stats import qmc
import torch

from optuna_bocr import keys as _keys
from optuna_bocr.sampler._acquisition import optimize_log_ei
from optuna_bocr.sampler._clustering import distance_matrix
from optuna_bocr.sampler._clustering import structure_pvalue
from optuna_bocr.sampler._clustering import WardTree
from optuna_bocr.sampler._features import ParameterFeatures
from optuna_bocr.sampler._gp import fit_gp
from optuna_bocr.sampler._gp import Posterior
from optuna_bocr.sampler._schedule import make_schedule
from optuna_bocr.sampler._schedule import rollback_bounds
from optuna_bocr.sampler._schedule import Schedule
from optuna_bocr.sampler._schedule import should_advance

if TYPE_CHECKING:
    from optuna.study import Study


_logger = optuna.logging.get_logger(__name__)

STAGE_OPEN_ATTR = _keys.SYSTEM_ATTR_PREFIX + "stage_open"
"""System attr on the trial that opened a stage: ``{"stage", "lower", "upper"}``."""
PROPOSAL_ATTR = _keys.SYSTEM_ATTR_PREFIX + "proposal"
"""System attr: the per-parameter values proposed for the trial (search_space order)."""
GP_ATTR = _keys.SYSTEM_ATTR_PREFIX + "gp"
"""System attr: ``{"stage", "theta"}``, the GP hyperparameters fitted for the trial.

The next trial of the same stage starts its fit from them (like GPSampler's in-memory
cache, but in the storage, so that resumed and parallel studies behave the same)."""

_DUPLICATE_TOL = 1e-3
"""Two points closer than this in every coordinate (unit cube of the stage) are the same."""
_SOBOL_SEED_LIMIT = 2**31 - 1
_STRUCTURE_N_NULL = 19
_STRUCTURE_ALPHA = 0.05
"""Features fail the structure test when its p-value (19 null data sets) is above this."""
_MAX_MOVED_PROPOSALS = 50
"""At most this many moved proposals (those of the latest trials) are observed."""
_MOVED_TOL = 1e-6
"""A proposal farther than this (unit cube of the stage) from its actual point is observed too."""


def _to_features(
    features: ParameterFeatures | Mapping[str, ArrayLike] | ArrayLike, names: list[str]
) -> ParameterFeatures:
    if isinstance(features, ParameterFeatures):
        parsed = features
    elif isinstance(features, Mapping):
        parsed = ParameterFeatures(
            vectors={k: np.asarray(v, dtype=float) for k, v in features.items()}
        )
    else:
        try:
            arr = np.asarray(features, dtype=float)
        except (TypeError, ValueError) as e:
            raise TypeError(
                "features must be ParameterFeatures, a mapping name -> vector or a 2-D array "
                f"(one row per parameter), got {type(features).__name__}."
            ) from e
        if arr.ndim != 2:
            raise ValueError(
                f"A features array must be 2-D (one row per parameter), got shape {arr.shape}."
            )
        if arr.shape[0] != len(names):
            raise ValueError(
                f"The features array has {arr.shape[0]} rows but search_space has "
                f"{len(names)} parameters."
            )
        parsed = ParameterFeatures(vectors=dict(zip(names, arr, strict=True)))
    for part_name in ("samples", "vectors"):
        part = getattr(parsed, part_name)
        if part and set(part) != set(names):
            missing = sorted(set(names) - set(part))
            extra = sorted(set(part) - set(names))
            raise ValueError(
                f"features.{part_name} must have exactly the search_space names; "
                f"missing {missing}, unknown {extra}."
            )
    return parsed


def _validate_search_space(
    search_space: Mapping[str, BaseDistribution],
) -> dict[str, FloatDistribution]:
    if not isinstance(search_space, Mapping):
        raise TypeError(
            "search_space must be a mapping name -> FloatDistribution, got "
            f"{type(search_space).__name__}."
        )
    if len(search_space) == 0:
        raise ValueError("search_space must not be empty.")
    out: dict[str, FloatDistribution] = {}
    for name, dist in search_space.items():
        if not isinstance(dist, FloatDistribution):
            raise TypeError(
                f"search_space[{name!r}] is {type(dist).__name__}; BOCRSampler searches "
                "continuous parameters only (FloatDistribution)."
            )
        if dist.log:
            raise ValueError(
                f"search_space[{name!r}] has log=True; not supported, because a cluster "
                "shares one value on a linear scale among its members."
            )
        if dist.step is not None:
            raise ValueError(
                f"search_space[{name!r}] has step={dist.step}; not supported, because the "
                "cluster means that map observations between stages fall off the step grid."
            )
        out[name] = dist
    return out


class BOCRSampler(BaseSampler):
    """Bayesian optimisation with clustering and rollback (BOCR, Fan et al., ECCV 2022).

    The parameters are grouped by a Ward linkage tree over their features; the search
    starts with one variable per cluster (every member parameter gets its cluster's value,
    clipped to its own distribution), then rolls back to finer cuts of the same tree
    (optional "bridge" stages) and finally to one variable per parameter. Each stage change
    narrows the bounds to the range of the best trials, and every earlier trial becomes an
    observation of the new stage: a cluster's value is the mean of its members' *actual*
    values (user attr :data:`~optuna_bocr.ACTUAL_PARAMS_KEY` when the objective records it,
    else the trial's params). Trials ``0 .. n_startup_trials - 1`` come from a scrambled
    Sobol design in the first stage's space; later trials maximise log expected improvement
    of a GPyTorch exact GP (Matern 5/2, ARD, learned noise, dimension-scaled lengthscale
    prior) with Sobol candidates and L-BFGS-B, inside the current stage's bounds.

    Everything the sampler needs is derived from the trial history in the storage and from
    ``(seed, trial number)``: per-trial system attrs record each proposal (fixed before the
    trial gets its params) and, on the trial that opens a stage, that stage's bounds. So a
    study resumed in another process, or shared by several workers, continues the same way;
    a study run for 40 trials in one process proposes exactly what 20 + 20 trials in two
    processes propose.
    Each GP fit warm-starts from the hyperparameters stored on the latest earlier trial of
    the same stage (system attr), which keeps the per-trial time small. Running trials are
    fantasised at the GP's posterior mean (kriging believer), and a proposal within 1e-3 (of
    the stage's range, in every coordinate) of any other trial's proposal is skipped for the
    next best candidate, also when another worker proposes it at the same moment (each
    proposal is stored first and checked against the others' afterwards).

    Stage changes: with ``B`` bridge stages there are ``B + 1`` changes; change ``i``
    (to stage ``i + 1``) happens at the first trial whose number is at least
    ``rollback_at[i]``, or earlier, from trial number ``patience_from[i]`` on, once
    ``patience`` observations in a row (counted from the later of the last new best and
    the start of the current stage) brought no new best. If several workers open the same
    stage at once, the opening with the lowest trial number is used by later trials.

    Observations: COMPLETE trials at their value, PRUNED trials at their last intermediate
    value; FAIL trials (Optuna fails trials whose objective returns NaN) are ignored. Points
    outside the current stage's bounds are kept as they are (not clipped): they still tell
    the GP about the function; only the acquisition is confined to the bounds. The top-k
    trials that set the bounds of a new stage are COMPLETE trials only.

    Args:
        search_space:
            Parameter name -> :class:`~optuna.distributions.FloatDistribution` (linear, no
            step). It is the relative search space of every trial, the first included.
        features:
            What to cluster on: :class:`~optuna_bocr.ParameterFeatures`, or a mapping
            name -> feature vector, or a 2-D array with one row per parameter in
            ``search_space`` order (the last two are structural vectors).
        distance:
            ``"eu"`` (L2 distance between KDE densities of ``features.samples``), ``"js"``
            (Jensen-Shannon distance between them) or ``"st"`` (Euclidean distance between
            ``features.vectors`` after each column is divided by its maximum absolute
            value). ``None``: ``"eu"`` if ``features.samples`` is given, else ``"st"``.
        n_clusters:
            Number of variables of the first stage, in ``[1, len(search_space)]``.
        bridge_clusters:
            Number(s) of clusters of intermediate stages (gradual rollback), strictly
            increasing between ``n_clusters`` and ``len(search_space)``; ``None``: direct
            rollback.
        rollback_at:
            Trial numbers at which each stage change happens at the latest: one entry per
            change (``len(bridge_clusters) + 1``); further entries are ignored (so the
            default ``(100, 150)`` means "at 100" for direct rollback). ``None``: clustering
            only, never roll back.
        patience:
            Number of observations without a new best that ends a stage early; ``None``:
            only ``rollback_at`` counts.
        patience_from:
            Per change, the first trial number at which stagnation may trigger it (one entry
            per change, further entries ignored; each at most the matching ``rollback_at``).
            ``None``: no stagnation rule.
        top_k:
            Number of best COMPLETE trials whose cluster values set the bounds of a new
            stage (their range plus 5% of the user's range on each side).
        n_startup_trials:
            Trials with a number below this come from the Sobol design.
        seed:
            Seed of every random choice (together with the trial number). ``None``: a random
            seed, drawn once per sampler object (then two processes do not agree).
        independent_sampler:
            Sampler for parameters that are suggested but not in ``search_space`` (or with a
            different distribution); a warning is logged once per name. Default:
            :class:`~optuna.samplers.RandomSampler` with ``seed``.
        check_structure:
            Before the search, test whether the features group the parameters into
            ``n_clusters`` clusters better than chance: a permutation test of the silhouette
            of the Ward cut against 19 data sets in which the parameters do not differ
            (samples redrawn from the pooled median-shifted samples, or structural columns
            permuted; fixed seed, so every process decides the same). If they do not
            (p-value above 0.05; :attr:`structure_pvalue`), a warning is logged: the clusters
            may tie unrelated parameters together and cap what the search can reach. Not
            tested when ``n_clusters`` is 1 or the number of parameters.
        unstructured_fallback:
            If the structure test fails, search one variable per parameter from the first
            trial (plain GP-BO, no stages; :attr:`stage_sizes` shows it) instead of
            clustering. Needs ``check_structure``.

    Raises:
        TypeError: A distribution is not a FloatDistribution, or an argument has a wrong
            type.
        ValueError: Empty search space, log or step distributions, features that do not
            match the parameter names or count, ``n_clusters`` outside ``[1, dims]``, or
            stage arguments that do not fit (see above).
    """

    def __init__(
        self,
        search_space: Mapping[str, FloatDistribution],
        *,
        features: ParameterFeatures | Mapping[str, ArrayLike] | ArrayLike,
        distance: Literal["eu", "js", "st"] | None = None,
        n_clusters: int = 3,
        bridge_clusters: int | Sequence[int] | None = None,
        rollback_at: Sequence[int] | None = (100, 150),
        patience: int | None = 20,
        patience_from: Sequence[int] | None = (80, 130),
        top_k: int = 10,
        n_startup_trials: int = 10,
        seed: int | None = None,
        independent_sampler: BaseSampler | None = None,
        check_structure: bool = True,
        unstructured_fallback: bool = False,
    ) -> None:
        self._search_space = _validate_search_space(search_space)
        self._names = list(self._search_space)
        dims = len(self._names)
        feats = _to_features(features, self._names)
        if distance is None:
            distance = "eu" if feats.samples else "st"
        if distance not in ("eu", "js", "st"):
            raise ValueError(f"distance must be 'eu', 'js', 'st' or None, got {distance!r}.")
        self._distance = distance
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an int >= 1, got {top_k!r}.")
        if (
            isinstance(n_startup_trials, bool)
            or not isinstance(n_startup_trials, int)
            or n_startup_trials < 0
        ):
            raise ValueError(f"n_startup_trials must be an int >= 0, got {n_startup_trials!r}.")
        for flag, value in (
            ("check_structure", check_structure),
            ("unstructured_fallback", unstructured_fallback),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be a bool, got {value!r}.")
        if unstructured_fallback and not check_structure:
            raise ValueError("unstructured_fallback=True needs check_structure=True.")
        self._schedule = make_schedule(
            dims=dims,
            n_clusters=n_clusters,
            bridge_clusters=bridge_clusters,
            rollback_at=rollback_at,
            patience=patience,
            patience_from=patience_from,
        )
        samples, vectors = self._feature_arrays(feats, distance)
        self._tree = WardTree(
            distance_matrix(distance=distance, samples=samples, vectors=vectors), dims
        )
        self._structure_pvalue: float | None = None
        if check_structure and 1 < self._schedule.sizes[0] < dims:
            self._structure_pvalue = structure_pvalue(
                distance=distance,
                n_clusters=self._schedule.sizes[0],
                samples=samples,
                vectors=vectors,
                n_null=_STRUCTURE_N_NULL,
            )
            if self._structure_pvalue > _STRUCTURE_ALPHA:
                self._warn_unstructured(distance, fallback=unstructured_fallback)
                if unstructured_fallback:
                    self._schedule = Schedule(
                        sizes=(dims,), rollback_at=(), patience=None, patience_from=None
                    )
        self._clusters = [self._tree.cut(k) for k in self._schedule.sizes]
        self._lows = np.array([d.low for d in self._search_space.values()])
        self._highs = np.array([d.high for d in self._search_space.values()])
        # Per stage: (n_clusters, dims) averaging matrix, cluster lows/highs (union range).
        self._mean_mats: list[np.ndarray] = []
        self._cluster_lows: list[np.ndarray] = []
        self._cluster_highs: list[np.ndarray] = []
        for groups in self._clusters:
            mat = np.zeros((len(groups), dims))
            for c, members in enumerate(groups):
                mat[c, members] = 1.0 / len(members)
            self._mean_mats.append(mat)
            self._cluster_lows.append(np.array([self._lows[g].min() for g in groups]))
            self._cluster_highs.append(np.array([self._highs[g].max() for g in groups]))
        self._top_k = top_k
        self._n_startup_trials = n_startup_trials
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        self._seed = int(seed)
        self._independent_sampler = independent_sampler or RandomSampler(seed=seed)
        self._warned: set[str] = set()

    # -- Read-only helpers -------------------------------------------------------------------

    @property
    def n_stages(self) -> int:
        """Number of stages (first clustering, bridges, one variable per parameter)."""
        return self._schedule.n_stages

    @property
    def structure_pvalue(self) -> float | None:
        """p-value of the features' structure test (``check_structure``); ``None``: untested."""
        return self._structure_pvalue

    @property
    def stage_sizes(self) -> list[int]:
        """Number of search variables of each stage."""
        return list(self._schedule.sizes)

    def clusters(self, stage: int) -> list[list[str]]:
        """Parameter names of each cluster of ``stage`` (ordered by first member)."""
        if not 0 <= stage < self.n_stages:
            raise ValueError(f"stage must be in [0, {self.n_stages - 1}], got {stage}.")
        return [[self._names[i] for i in g] for g in self._clusters[stage]]

    # -- BaseSampler ---------------------------------------------------------------------------

    def reseed_rng(self) -> None:
        # Proposals depend on (seed, trial number) only, so n_jobs > 1 keeps them reproducible.
        self._independent_sampler.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        _check_single_objective(study)
        return dict(self._search_space)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        _check_single_objective(study)
        names = [n for n in self._names if n in search_space]
        if not names:
            return {}
        if torch.empty(()).device.type == "cpu":
            values, stage, cluster_values = self._propose(study, trial)
        else:
            # The user changed torch's default device: the GP is small and lives on the CPU.
            # (The device context costs a Python call per tensor operation, so only here.)
            with torch.device("cpu"):
                values, stage, cluster_values = self._propose(study, trial)
        storage = study._storage  # _propose stored the proposal (PROPOSAL_ATTR) already.
        storage.set_trial_user_attr(trial._trial_id, _keys.STAGE_KEY, int(stage))
        storage.set_trial_user_attr(
            trial._trial_id, _keys.N_CLUSTERS_KEY, int(self._schedule.sizes[stage])
        )
        storage.set_trial_user_attr(
            trial._trial_id, _keys.CLUSTER_VALUES_KEY, [float(v) for v in cluster_values]
        )
        by_name = dict(zip(self._names, values, strict=True))
        return {n: float(by_name[n]) for n in names}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        _check_single_objective(study)
        if param_name not in self._warned:
            self._warned.add(param_name)
            reason = (
                "it has a different distribution than in search_space"
                if param_name in self._search_space
                else "it is not in search_space"
            )
            _logger.warning(
                f"Parameter {param_name!r} of trial {trial.number} is sampled by "
                f"{type(self._independent_sampler).__name__}, not BOCRSampler: {reason}. "
                "(Warned once per parameter name.)"
            )
        return self._independent_sampler.sample_independent(
            study, trial, param_name, param_distribution
        )

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._independent_sampler.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._independent_sampler.after_trial(study, trial, state, values)

    # -- Internals -------------------------------------------------------------------------------

    def _warn_unstructured(self, distance: str, *, fallback: bool) -> None:
        then = (
            "BOCRSampler searches one variable per parameter from the first trial "
            "(unstructured_fallback=True)."
            if fallback
            else "Clustering anyway; pass unstructured_fallback=True to search one variable "
            "per parameter instead, or give features that tell the parameters apart."
        )
        _logger.warning(
            f"The features (distance {distance!r}) do not group the {len(self._names)} "
            f"parameters into {self._schedule.sizes[0]} clusters better than chance "
            f"(permutation test, p = {self._structure_pvalue:.2f}): the clusters may tie "
            f"unrelated parameters together. {then}"
        )

    def _feature_arrays(
        self, feats: ParameterFeatures, distance: str
    ) -> tuple[list[np.ndarray] | None, np.ndarray | None]:
        """``(samples, vectors)`` in ``search_space`` order (the unused one is ``None``)."""
        if distance in ("eu", "js"):
            if not feats.samples:
                raise ValueError(f"distance={distance!r} needs features.samples.")
            samples = [
                _finite_1d(feats.samples[n], f"features.samples[{n!r}]") for n in self._names
            ]
            return samples, None
        if not feats.vectors:
            raise ValueError("distance='st' needs features.vectors (structural features).")
        rows = [_finite_1d(feats.vectors[n], f"features.vectors[{n!r}]") for n in self._names]
        if len({r.size for r in rows}) != 1:
            raise ValueError(
                f"features.vectors must all have the same length, got {[r.size for r in rows]}."
            )
        return None, np.stack(rows)

    def _actual_vector(self, t: FrozenTrial, *, proposal_only: bool = False) -> np.ndarray | None:
        """Per-parameter values of a trial: actual values, else params, else the proposal."""
        actual = {} if proposal_only else t.user_attrs.get(_keys.ACTUAL_PARAMS_KEY)
        if not isinstance(actual, Mapping):
            actual = {}
        params = {} if proposal_only else t.params
        proposal = t.system_attrs.get(PROPOSAL_ATTR)
        if not isinstance(proposal, list) or len(proposal) != len(self._names):
            proposal = None
        out = np.empty(len(self._names))
        for i, name in enumerate(self._names):
            if name in actual:
                v = actual[name]
            elif name in params:
                v = params[name]
            elif proposal is not None:
                v = proposal[i]
            else:
                return None
            try:
                out[i] = float(v)
            except (TypeError, ValueError):
                return None
        return out if np.all(np.isfinite(out)) else None

    def _observations(
        self, trials: list[FrozenTrial], sign: float
    ) -> tuple[list[int], np.ndarray, np.ndarray, list[bool]]:
        """Numbers, actual vectors, oriented values and completeness of the observations."""
        numbers: list[int] = []
        xs: list[np.ndarray] = []
        ys: list[float] = []
        complete: list[bool] = []
        for t in trials:
            if t.state == TrialState.COMPLETE and t.values is not None:
                value = t.values[0]
            elif t.state == TrialState.PRUNED and t.intermediate_values:
                value = t.intermediate_values[max(t.intermediate_values)]
            else:
                continue
            if value is None or not math.isfinite(value):
                continue
            x = self._actual_vector(t)
            if x is None:
                continue
            numbers.append(t.number)
            xs.append(x)
            ys.append(sign * float(value))
            complete.append(t.state == TrialState.COMPLETE)
        dims = len(self._names)
        return numbers, np.asarray(xs).reshape(-1, dims), np.asarray(ys), complete

    def _current_stage(self, before: list[FrozenTrial]) -> tuple[int, int, np.ndarray, np.ndarray]:
        """Latest opened stage, the trial number that opened it and its bounds."""
        openings: dict[int, tuple[int, list[float], list[float]]] = {}
        for t in before:
            rec = t.system_attrs.get(STAGE_OPEN_ATTR)
            if not isinstance(rec, Mapping):
                continue
            s = int(rec["stage"])
            if s not in openings or t.number < openings[s][0]:
                openings[s] = (t.number, rec["lower"], rec["upper"])
        if not openings:
            return 0, 0, self._cluster_lows[0], self._cluster_highs[0]
        stage = max(openings)
        start, lower, upper = openings[stage]
        return stage, start, np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)

    def _propose(self, study: Study, trial: FrozenTrial) -> tuple[np.ndarray, int, np.ndarray]:
        number = trial.number
        trials = study._get_trials(deepcopy=False, use_cache=False)
        before = [t for t in trials if t.number < number]
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        obs_numbers, obs_full, obs_y, obs_complete = self._observations(before, sign)

        stage, stage_start, lower, upper = self._current_stage(before)
        if should_advance(
            self._schedule,
            stage=stage,
            stage_start=stage_start,
            trial_number=number,
            history=list(zip(obs_numbers, obs_y.tolist(), strict=True)),
        ) and any(obs_complete):
            stage += 1
            stage_start = number
            idx = [i for i in range(len(obs_numbers)) if obs_complete[i]]
            idx.sort(key=lambda i: (-obs_y[i], obs_numbers[i]))
            top = obs_full[idx[: self._top_k]] @ self._mean_mats[stage].T
            lower, upper = rollback_bounds(
                top, self._cluster_lows[stage], self._cluster_highs[stage]
            )
            study._storage.set_trial_system_attr(
                trial._trial_id,
                STAGE_OPEN_ATTR,
                {"stage": stage, "lower": lower.tolist(), "upper": upper.tolist()},
            )
            _logger.info(
                f"Trial {number} opens BOCR stage {stage} "
                f"({self._schedule.sizes[stage]} variables)."
            )

        mat = self._mean_mats[stage]
        dim = mat.shape[0]
        width = upper - lower
        scale = np.where(width > 0, width, 1.0)

        def to_unit(full: np.ndarray) -> np.ndarray:
            return (full @ mat.T - lower) / scale

        pending_full = [
            x
            for t in trials
            if t.state == TrialState.RUNNING and t.number != number
            for x in [self._actual_vector(t, proposal_only=True)]
            if x is not None
        ]
        x_obs, y_obs = self._with_moved_proposals(
            to_unit(obs_full), obs_y, obs_numbers, before, to_unit, since=stage_start
        )
        x_pending = to_unit(np.asarray(pending_full).reshape(-1, len(self._names)))
        rng = np.random.default_rng([self._seed, number])

        if number < self._n_startup_trials or len(y_obs) == 0:
            m = max(0, math.ceil(math.log2(number + 1)))
            sobol = qmc.Sobol(dim, scramble=True, seed=self._seed + stage)
            design = sobol.random_base2(m) if m > 0 else sobol.random(1)
            candidates = np.concatenate([design[number : number + 1], rng.random((16, dim))])
        else:
            try:
                candidates = self._gp_candidates(
                    study, trial, before, stage, x_obs, y_obs, x_pending, rng
                )
            except (RuntimeError, ValueError, np.linalg.LinAlgError) as e:
                _logger.warning(
                    f"Trial {number}: the GP step failed ({e!r}); proposing a random point."
                )
                candidates = rng.random((16, dim))

        member_cluster = np.argmax(mat, axis=0)

        def to_full(u: np.ndarray) -> np.ndarray:
            return np.clip((lower + u * width)[member_cluster], self._lows, self._highs)

        known = np.concatenate([x_obs, x_pending])
        u = self._claim(candidates, known, study, trial, to_unit, to_full)
        return to_full(u), stage, lower + u * width

    def _with_moved_proposals(
        self,
        x_obs: np.ndarray,
        y_obs: np.ndarray,
        numbers: list[int],
        before: list[FrozenTrial],
        to_unit: Callable[[np.ndarray], np.ndarray],
        *,
        since: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Observe the proposals that the objective moved, for the current stage's trials.

        An objective that replaces what it is given by what it can use (the pruning
        objective clips ratios to a FLOPs budget) returns the same value for the proposal as
        for the actual point. Observing only the actual point leaves the region proposed
        into unexplored for the GP, and log-EI keeps proposing there, the objective keeps
        moving the proposals back, and the search stalls; with the proposal observed too the
        GP learns that the region gives the moved result. Points that coincide in the stage's
        space (clipping that only moved values inside a cluster) are not repeated.

        Only trials numbered ``since`` (the start of the current stage) or later add their
        proposal, and only the latest :data:`_MAX_MOVED_PROPOSALS` of them: the acquisition
        works in the current stage's space, near where it proposed lately, and all the
        proposals would up to double the GP's data (and quadruple the cost of its fit).
        """
        by_number = {t.number: t for t in before}
        extra_x: list[np.ndarray] = []
        extra_y: list[float] = []
        for x_actual, y, number in zip(x_obs, y_obs, numbers, strict=True):
            if number < since:
                continue
            proposal = self._actual_vector(by_number[number], proposal_only=True)
            if proposal is None:
                continue
            x_proposal = to_unit(proposal[None, :])[0]
            if np.max(np.abs(x_proposal - x_actual)) > _MOVED_TOL:
                extra_x.append(x_proposal)
                extra_y.append(float(y))
        if not extra_x:
            return x_obs, y_obs
        extra_x, extra_y = extra_x[-_MAX_MOVED_PROPOSALS:], extra_y[-_MAX_MOVED_PROPOSALS:]
        return np.concatenate([x_obs, np.stack(extra_x)]), np.concatenate([y_obs, extra_y])

    def _gp_candidates(
        self,
        study: Study,
        trial: FrozenTrial,
        before: list[FrozenTrial],
        stage: int,
        x_obs: np.ndarray,
        obs_y: np.ndarray,
        x_pending: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Fit the GP, fantasise the running trials and rank candidates by log-EI."""
        mu, sd = obs_y.mean(), obs_y.std()
        y_std = (obs_y - mu) / (sd if sd > 0 else 1.0)
        model, theta = fit_gp(x_obs, y_std, self._warm_start(before, stage))
        study._storage.set_trial_system_attr(
            trial._trial_id, GP_ATTR, {"stage": stage, "theta": theta.tolist()}
        )
        posterior, fantasies = Posterior(model).with_fantasies(x_pending)
        incumbent = float(np.max(np.concatenate([y_std, fantasies])))
        inside = np.all((x_obs >= 0.0) & (x_obs <= 1.0), axis=1)
        best_inside = int(np.argmax(np.where(inside, y_std, -np.inf)))
        warm = x_obs[[best_inside]] if inside.any() else x_obs[:0]
        candidates, _ = optimize_log_ei(
            posterior, best=incumbent, dim=x_obs.shape[1], rng=rng, warm_starts=warm
        )
        return candidates

    @staticmethod
    def _warm_start(before: list[FrozenTrial], stage: int) -> np.ndarray | None:
        """Hyperparameters of the latest earlier trial of ``stage`` that fitted a GP."""
        for t in sorted(before, key=lambda t: -t.number):
            rec = t.system_attrs.get(GP_ATTR)
            if isinstance(rec, Mapping) and rec.get("stage") == stage:
                return np.asarray(rec["theta"], dtype=float)
        return None

    def _claim(
        self,
        candidates: np.ndarray,
        known: np.ndarray,
        study: Study,
        trial: FrozenTrial,
        to_unit: Callable[[np.ndarray], np.ndarray],
        to_full: Callable[[np.ndarray], np.ndarray],
    ) -> np.ndarray:
        """Store the best candidate that no other trial has as this trial's proposal.

        Workers that propose at the same moment from the same history find the same optimum.
        So each candidate is written to the storage first and compared with every other
        trial's proposal afterwards: of two trials that claim the same point at once, the
        one that reads last sees the other's claim and moves on to its next candidate (both
        may), and no two trials keep one point. In one process nothing else writes in between
        and this is the best candidate not near ``known`` or an earlier proposal.
        """
        storage = study._storage
        for u in candidates:
            if _near(known, u):
                continue
            storage.set_trial_system_attr(trial._trial_id, PROPOSAL_ATTR, to_full(u).tolist())
            # Re-read every trial: another worker may have proposed (and even finished) meanwhile.
            others = [
                x
                for t in study._get_trials(deepcopy=False, use_cache=False)
                if t.number != trial.number
                for x in [self._actual_vector(t, proposal_only=True)]
                if x is not None
            ]
            if not others:
                return u
            others_unit = to_unit(np.asarray(others))
            if not _near(others_unit, u):
                return u
            known = np.concatenate([known, others_unit])
        u = candidates[0]  # Every candidate is taken: repeat the best one.
        storage.set_trial_system_attr(trial._trial_id, PROPOSAL_ATTR, to_full(u).tolist())
        return u


def _near(points: np.ndarray, u: np.ndarray) -> bool:
    """Whether a row of ``points`` is within the duplicate tolerance of ``u`` (max norm)."""
    return len(points) > 0 and bool(np.min(np.max(np.abs(points - u), axis=1)) <= _DUPLICATE_TOL)


def _finite_1d(values: ArrayLike, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be a non-empty 1-D array of finite values, got {arr!r}.")
    return arr


def _check_single_objective(study: Study) -> None:
    if study._is_multi_objective():
        raise ValueError(
            "BOCRSampler supports single-objective studies only; this study has "
            f"{len(study.directions)} objectives."
        )
