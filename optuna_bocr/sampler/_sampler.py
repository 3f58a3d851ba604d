"""BOCRSampler: clustered GP Bayesian optimisation with rollback, as an Optuna sampler."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Literal
from typing import TYPE_CHECKING

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

from optuna_bocr.sampler import _storage
from optuna_bocr.sampler._evaluation_key import EvaluationKey
from optuna_bocr.sampler._features import ParameterFeatures
from optuna_bocr.sampler._outcome import OutcomeChoice
from optuna_bocr.sampler._plan import make_plan
from optuna_bocr.sampler._proposal import Proposal
from optuna_bocr.sampler._proposal import propose
from optuna_bocr.sampler._schedule import PATIENCE_GAIN
from optuna_bocr.sampler._space import validate_search_space
from optuna_bocr.sampler._trust_region import INIT_LENGTH
from optuna_bocr.sampler._trust_region import RELATIVE_IMPROVEMENT

if TYPE_CHECKING:
    from optuna.study import Study


_logger = optuna.logging.get_logger(__name__)


class BOCRSampler(BaseSampler):
    """Bayesian optimisation with clustering and rollback (BOCR, Fan et al., ECCV 2022).

    The parameters are grouped by a Ward linkage tree over their features; the search
    starts with one variable per cluster (each member gets its cluster's value, clipped to
    its own distribution), then rolls back to finer cuts of the same tree (optional "bridge"
    stages) and finally to one variable per parameter, keeping the user's whole range (or,
    with ``narrow_on_rollback=True`` as in the original, the range of the best trials).
    Every earlier trial is an observation of the new stage: a cluster's value is the mean
    of its members' params (with ``observe_actual=True``, of the values the objective
    actually evaluated). The first ``n_startup_trials`` trials come from a scrambled Sobol
    design; later ones maximise log expected improvement of a GPyTorch exact GP (Matern
    5/2, ARD, learned noise, dimension-scaled lengthscale prior) from Sobol candidates and
    L-BFGS-B, inside the stage's bounds; after the first stage, inside a trust region
    around the best trial (``trust_region``), so the fine stages refine what the coarse
    one found.

    Everything the sampler needs is derived from the storage and from ``(seed, trial
    number)``: each proposal and each stage's bounds are system attrs of the trials, and
    each GP fit warm-starts from the hyperparameters stored on the stage's latest trial. So a
    study resumed in another process or shared by several workers continues the same way
    (40 trials in one process propose what 20 + 20 in two do). Running trials are
    fantasised at the GP's posterior mean (kriging believer); a proposal within 1e-3 (of the
    stage's range, every coordinate) of another trial's is skipped for the next best
    candidate, also when another worker proposes it at the same moment (each proposal is
    stored first and checked against the others' afterwards).

    Stage changes: with ``B`` bridge stages there are ``B + 1`` changes; change ``i`` happens
    at the first trial numbered ``rollback_at[i]`` or later, or earlier once ``patience``
    observations in a row (since the later of the last new best and the stage's start)
    brought no new best (a value that beats the last new best by more than ``patience_gain``
    times that best's lead over the median observation); ``patience="auto"`` is
    ``max(6, 2 k)`` for a stage of ``k`` variables, so coarse stages end soon after they
    stall. If several workers open a stage
    at once, the opening with the lowest trial number holds, and a trial that finds one
    opened meanwhile below it proposes again in that stage. The original BOCR schedule is
    :data:`~optuna_bocr.PAPER_SCHEDULE`: ``BOCRSampler(..., **PAPER_SCHEDULE)``.

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
            Number of observations without a new best that ends a stage early; ``"auto"``:
            ``max(6, 2 k)`` for a stage of ``k`` variables; ``None``: only ``rollback_at``
            counts. Both count every trial, the Sobol design's too.
        patience_from:
            Per change, the first trial number at which stagnation may trigger it (one entry
            per change, further entries ignored; each at most the matching ``rollback_at``).
            ``None``: from any trial number.
        patience_gain:
            What counts as a new best for ``patience``: a value that beats the last new
            best ``b`` by more than ``patience_gain * (b - m)``, ``m`` the median of the
            values observed before it; ``0``: any gain. The default, 0.05, ends a coarse
            stage whose gains have dwindled to crumbs, and made the same stage changes as
            any gain on every recorded pruning run but one (measured:
            benchmarks/RECORD.md, "A stage patience that ignores crumbs").
        narrow_on_rollback:
            Whether each stage change narrows the bounds to the range of the ``top_k`` best
            COMPLETE trials (their cluster values, plus 5% of the user's range on each
            side), as the original BOCR does. ``False`` (default): every stage searches the
            user's whole range; the earlier trials still steer the GP, and a box drawn from
            a coarse stage's best trials cannot keep the finer stages from the optimum
            (measured: benchmarks/RECORD.md, "The defaults: patience relative to the stage").
        observe_actual:
            Whether the GP observes the values the objective actually evaluated (user attr
            :data:`~optuna_bocr.ACTUAL_PARAMS_KEY`, e.g. ratios after the FLOPs budget
            clipped them) and, beside them, the moved proposals. ``False`` (default): it
            observes the trials' params, as Optuna's samplers do; the objective then is a
            deterministic function of what the sampler proposed, which the GP models
            better under a clipping budget rule, and level under a scaling one (measured:
            benchmarks/RECORD.md, "What the GP observes").
        trust_region:
            Whether the stages after the first search a trust region: a box around the
            best trial (TuRBO; or see ``incumbent``), each side proportional to the GP's
            lengthscale, that doubles after 3 new bests in a row and halves after
            ``max(4, ceil(k / 5))`` trials without one (``k`` variables). ``False``: the
            stage's whole bounds, as the original BOCR (measured: benchmarks/RECORD.md,
            "A trust region after the first stage").
        trust_region_length:
            Side of that box when a stage opens (in the stage's unit cube, before the
            lengthscale weighting; at most 1.6). The default is TuRBO's 0.8; 0.2 measured
            within noise of it on the pruning benchmark (benchmarks/RECORD.md, "The trust
            region's first side").
        trust_region_restart_length:
            Side of the box when it starts again after shrinking below 1/32 (``None``:
            ``trust_region_length``; 0.4 measured 0.09 lower on ResNet-20, benchmarks/RECORD.md,
            "The trust region started again at half its first side").
        trust_region_improvement:
            A trial is a new best for the trust region when it beats the best by more than
            this fraction of ``|best|``: by default any gain; 1e-3 (the earlier default)
            measured 0.10-0.13 points lower on ResNet-20 at 5000 images
            (benchmarks/RECORD.md, "Any gain a new best").
        incumbent:
            In the trust region's stages, what the box centres on and log-EI must beat:
            ``"observed"``, the best observation; ``"mean"``, the observation with the best
            GP posterior mean, and that mean, which discounts a value that got lucky on a
            finite validation split (needs ``trust_region``; measured within noise of the
            default, benchmarks/RECORD.md, "The trust region around the best posterior mean").
        restart:
            Where the trust region's box centres when it starts again (after shrinking
            below 1/32): ``"incumbent"``, the best trial again; ``"elsewhere"``, the best
            trial outside the box of the first side around the centre it leaves, new bests
            then counted against that run's own best (TuRBO's local regions, without their
            fresh design); measured 0.17 points worse at 100 trials on ResNet-20.
        acquisition:
            What ranks the candidates in the trust region's box: ``"log_ei"``, log-EI
            maximised as in the first stage; ``"thompson"``, one joint posterior draw over
            ``100 k`` candidates (at most 2048) around the box's centre (TuRBO's; measured
            level on ResNet-20, worse on the synthetic tasks: benchmarks/RECORD.md, "Thompson
            sampling in the trust region").
        lengthscales:
            The GP's lengthscales in the stages after the first: ``"ard"``, one per
            variable; ``"shared"``, one for all; ``"clusters"``, one per cluster of the
            first stage (its finer variables share it). The first stage keeps ARD.
            ``"shared"`` ends synthetic misleading27 at a regret of 0.0066 against 0.043
            (40 seeds), but was no better on ResNet-56 and worse where few variables
            matter (benchmarks/RECORD.md, "Tied lengthscales after the first stage").
        box_lengthscales:
            With tied ``lengthscales`` and the trust region, what weights the box's sides:
            ``"model"``, the tied lengthscales (one shared: a cube); ``"ard"``, one per
            variable of a second GP fitted beside (TuRBO's box, as without tying), while the
            tied GP still ranks the candidates.
        outcome_transform:
            What the GP is fitted on: ``"yeo-johnson"``, the values
            standardised, warped by the Yeo-Johnson power transform fitted to them (HEBO's)
            and standardised again, so that a few very bad trials do not squeeze the good
            ones into the GP's noise; ``"standardize"``, the values standardised (Optuna's
            GPSampler, and this sampler until 2026-12-06); ``"rank"``, the normal quantiles
            of their ranks (a Gaussian copula). The order of the values, and so the best
            trial, is the same under each. ``"yeo-johnson-after-first"`` fits the first
            stage of a schedule of several on standardised values and the later ones on
            warped values. The warp measured +0.17 points at 100 trials on ResNet-20 (9
            seeds) and +0.20 at 25 on ResNet-56, +0.11 at 100 (5 seeds), where it leads
            CMA-ES by +0.29 (benchmarks/RECORD.md, "The GP on warped values"); warping only
            after the first stage spared synthetic misleading27 but was behind on ResNet-20
            ("The GP on warped values after the first stage only").
        evaluation_key:
            ``params -> hashable``: what the objective evaluates for a point, when many
            points give one evaluation (:meth:`optuna_bocr.pruning.PruningObjective.network_key`:
            ratios that round to the same channel counts prune to one network). No point
            whose key an earlier or running trial has is proposed while one with a new key
            exists (the trust region widens for a proposal whose best candidates are all
            known). ``None``: every point is new. Called on each trial's params and on the
            best candidates (memoised). On ResNet-20 at 5000 validation images, +0.10 points
            at 200 trials (benchmarks/RECORD.md, "No network twice").
        top_k:
            Number of best COMPLETE trials whose cluster values set the bounds of a new
            stage (with ``narrow_on_rollback``).
        n_startup_trials:
            Trials with a number below this come from the Sobol design. The default 5 and
            the patience's floor of 6 measured better than 10 and 10 on the synthetic
            tasks with wrong or too coarse clusters, and level on ResNet-20
            (benchmarks/RECORD.md, "A shorter start").
        seed:
            Seed of every random choice (together with the trial number). ``None``: a random
            seed, drawn once per sampler object (then two processes do not agree).
        independent_sampler:
            Sampler for parameters that are suggested but not in ``search_space`` (or with a
            different distribution); a warning is logged once per name. Default:
            :class:`~optuna.samplers.RandomSampler` with ``seed``.
        check_structure:
            Before the search, test whether the features group the parameters into
            ``n_clusters`` clusters better than chance: the silhouette of the Ward cut
            against 19 data sets in which the parameters do not differ (samples redrawn
            from the pooled median-shifted samples, or structural columns permuted; fixed
            seed). If not (p-value above 0.05; :attr:`structure_pvalue`), a warning is
            logged, naming the other distance between samples if that one passes. Not tested
            when ``n_clusters`` is 1 or the number of parameters.
        unstructured_fallback:
            If the structure test fails, search one variable per parameter from the first
            trial (plain GP-BO, no stages; :attr:`stage_sizes` shows it) instead of
            clustering. Needs ``check_structure``. Measured (benchmarks/RECORD.md): it wins
            where the features are misleading (synthetic misleading27), and loses the first
            stage's early gain where they are merely uninformative (pruned ResNet-20).

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
        patience: int | Literal["auto"] | None = "auto",
        patience_from: Sequence[int] | None = None,
        patience_gain: float = PATIENCE_GAIN,
        narrow_on_rollback: bool = False,
        observe_actual: bool = False,
        trust_region: bool = True,
        trust_region_length: float = INIT_LENGTH,
        trust_region_restart_length: float | None = None,
        trust_region_improvement: float = RELATIVE_IMPROVEMENT,
        incumbent: Literal["observed", "mean"] = "observed",
        restart: Literal["incumbent", "elsewhere"] = "incumbent",
        acquisition: Literal["log_ei", "thompson"] = "log_ei",
        lengthscales: Literal["ard", "shared", "clusters"] = "ard",
        box_lengthscales: Literal["model", "ard"] = "model",
        outcome_transform: OutcomeChoice = "yeo-johnson",
        evaluation_key: EvaluationKey | None = None,
        top_k: int = 10,
        n_startup_trials: int = 5,
        seed: int | None = None,
        independent_sampler: BaseSampler | None = None,
        check_structure: bool = True,
        unstructured_fallback: bool = False,
    ) -> None:
        self._search_space = validate_search_space(search_space)
        self._names = list(self._search_space)
        self._plan, stages = make_plan(
            self._search_space,
            features=features,
            distance=distance,
            n_clusters=n_clusters,
            bridge_clusters=bridge_clusters,
            rollback_at=rollback_at,
            patience=patience,
            patience_from=patience_from,
            patience_gain=patience_gain,
            narrow_on_rollback=narrow_on_rollback,
            observe_actual=observe_actual,
            trust_region=trust_region,
            trust_region_length=trust_region_length,
            trust_region_restart_length=trust_region_restart_length,
            trust_region_improvement=trust_region_improvement,
            incumbent=incumbent,
            restart=restart,
            acquisition=acquisition,
            lengthscales=lengthscales,
            box_lengthscales=box_lengthscales,
            outcome_transform=outcome_transform,
            evaluation_key=evaluation_key,
            top_k=top_k,
            n_startup_trials=n_startup_trials,
            seed=seed,
            check_structure=check_structure,
            unstructured_fallback=unstructured_fallback,
        )
        self._clusters, self._structure_pvalue = stages.clusters, stages.pvalue
        self._layout = _storage.layout_record(
            self._names,
            self._plan.spaces[0].param_lows,
            self._plan.spaces[0].param_highs,
            self._clusters,
        )
        seed = self._plan.seed
        self._independent_sampler = independent_sampler or RandomSampler(seed=seed)
        self._warned: set[str] = set()
        # SciPy reads its Sobol direction numbers from a file on first use, in compiled code
        # that prints (and swallows) an exception raised meanwhile, e.g. Ctrl-C: load them now,
        # not inside a trial.
        qmc.Sobol(1, seed=0)

    # -- Read-only helpers -------------------------------------------------------------------

    @property
    def n_stages(self) -> int:
        """Number of stages (first clustering, bridges, one variable per parameter)."""
        return self._plan.schedule.n_stages

    @property
    def structure_pvalue(self) -> float | None:
        """p-value of the features' structure test (``check_structure``); ``None``: untested."""
        return self._structure_pvalue

    @property
    def stage_sizes(self) -> list[int]:
        """Number of search variables of each stage."""
        return list(self._plan.schedule.sizes)

    def clusters(self, stage: int) -> list[list[str]]:
        """Parameter names of each cluster of ``stage`` (ordered by first member)."""
        if not 0 <= stage < self.n_stages:
            raise ValueError(f"stage must be in [0, {self.n_stages - 1}], got {stage}.")
        return [[self._names[i] for i in g] for g in self._clusters[stage]]

    def check_study(self, study: Study) -> None:
        """Refuse a study whose trials were proposed with other stages or parameters.

        A study remembers the parameter names and ranges and every stage's clusters of the
        sampler that proposed its first trials. Resuming it with another ``n_clusters``,
        ``bridge_clusters``, search space, or features that cluster differently would mix
        two searches; call this before adding trials (the sampler checks it again on
        every proposal). A study without BOCR trials passes.

        Raises:
            ValueError: The study was searched with another layout (one line saying what
                differs).
        """
        _storage.check_single_objective(study)
        self._check_layout(_storage.read_trials(study))

    def _check_layout(self, trials: list[FrozenTrial]) -> bool:
        """Raise if the study's layout differs from this sampler's; whether it has one."""
        return _storage.check_layout(trials, self._layout)

    # -- BaseSampler ---------------------------------------------------------------------------

    def reseed_rng(self) -> None:
        # Proposals depend on (seed, trial number) only, so n_jobs > 1 keeps them reproducible.
        self._independent_sampler.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        _storage.check_single_objective(study)
        return dict(self._search_space)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        _storage.check_single_objective(study)
        names = [n for n in self._names if n in search_space]
        if not names:
            return {}
        retry = _storage.retried_proposal(trial, len(self._names))
        if retry is not None:
            values = retry
        else:
            trials = _storage.read_trials(study)
            if not self._check_layout(trials):
                _storage.write_layout(study, trial, self._layout)
            proposal = self._propose(study, trial, trials)
            _storage.write_trial_summary(
                study,
                trial,
                proposal.stage,
                self._plan.schedule.sizes[proposal.stage],
                proposal.cluster_values,
            )
            values = proposal.params
        by_name = dict(zip(self._names, values, strict=True))
        return {n: float(by_name[n]) for n in names}

    def _propose(self, study: Study, trial: FrozenTrial, trials: list[FrozenTrial]) -> Proposal:
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        if torch.empty(()).device.type == "cpu":
            return propose(self._plan, study, trial, trials, sign)
        # The user changed torch's default device: the GP is small and lives on the CPU.
        # (The device context costs a Python call per tensor operation, so only here.)
        with torch.device("cpu"):
            return propose(self._plan, study, trial, trials, sign)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        _storage.check_single_objective(study)
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
