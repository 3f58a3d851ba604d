"""The trust region of the stages after the first: its replayed length, its box, its use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial
import pytest
import torch

from optuna_bocr import BOCRSampler
from optuna_bocr.sampler._acquisition import log_ei
from optuna_bocr.sampler._acquisition import optimize_log_ei
from optuna_bocr.sampler._gp import fit_gp
from optuna_bocr.sampler._gp import FittedGP
from optuna_bocr.sampler._gp import Hyperparameters
from optuna_bocr.sampler._history import read_history
from optuna_bocr.sampler._outcome import transform_outcomes
from optuna_bocr.sampler._posterior import Posterior
from optuna_bocr.sampler._storage import gp_fit
from optuna_bocr.sampler._storage import stored_proposal
from optuna_bocr.sampler._trust_region import failure_tolerance
from optuna_bocr.sampler._trust_region import INIT_LENGTH
from optuna_bocr.sampler._trust_region import MAX_LENGTH
from optuna_bocr.sampler._trust_region import restart_center
from optuna_bocr.sampler._trust_region import TrustRegion

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_length_doubles_on_successes_halves_on_failures_and_restarts() -> None:
    assert TrustRegion.replay(-np.inf, [], 6).length == INIT_LENGTH
    # Three new bests in a row double the side, up to MAX_LENGTH.
    assert TrustRegion.replay(0.0, [1.0, 2.0, 3.0], 6).length == 2 * INIT_LENGTH
    assert TrustRegion.replay(0.0, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 6).length == MAX_LENGTH
    # A value that does not beat the best carried into the stage is a failure.
    tol = failure_tolerance(27)
    assert tol == 6 and failure_tolerance(6) == 4
    assert TrustRegion.replay(10.0, [9.0] * (tol - 1), 27).length == INIT_LENGTH
    assert TrustRegion.replay(10.0, [9.0] * tol, 27).length == INIT_LENGTH / 2
    # A success resets the failure count; by default any gain is a new best.
    assert TrustRegion.replay(10.0, [9.0] * 3 + [11.0] + [9.0] * 3, 6).length == INIT_LENGTH
    gains = [10.005, 10.01, 10.015]
    assert TrustRegion.replay(10.0, gains, 6).length == 2 * INIT_LENGTH
    assert TrustRegion.replay(10.0, [10.0] * 4, 6).length == INIT_LENGTH / 2  # ties fail
    # With improvement=1e-3 (the earlier default) gains within 0.1% of |best| are failures.
    assert TrustRegion.replay(10.0, [10.005] * 4, 6, improvement=1e-3).length == INIT_LENGTH / 2
    assert TrustRegion.replay(10.0, gains, 6, improvement=1e-3).length == INIT_LENGTH
    assert (
        TrustRegion.replay_elsewhere(
            [10.0, *gains], np.zeros((4, 6)), 1, 6, improvement=1e-3
        ).length
        == INIT_LENGTH
    )
    assert TrustRegion.replay_elsewhere([10.0, *gains], np.zeros((4, 6)), 1, 6).length == (
        2 * INIT_LENGTH
    )
    # Five halvings take the side below MIN_LENGTH: it starts again, once.
    state = TrustRegion.replay(10.0, [9.0] * (5 * 4), 6, init_length=0.8)
    assert (state.length, state.restarts) == (0.8, 1)
    # From a first side of 0.2, three halvings do (0.025 < 1/32), and it starts at 0.2 again.
    state = TrustRegion.replay(10.0, [9.0] * (3 * 4 - 1), 6, init_length=0.2)
    assert (state.length, state.restarts) == (0.05, 0)
    state = TrustRegion.replay(10.0, [9.0] * (3 * 4), 6, init_length=0.2)
    assert (state.length, state.restarts) == (0.2, 1)
    # A restart side of its own: the box opens at 0.8 and starts again at 0.4, from which
    # four halvings (not five) take it below MIN_LENGTH again.
    state = TrustRegion.replay(10.0, [9.0] * (5 * 4), 6, restart_length=0.4)
    assert (state.length, state.restarts) == (0.4, 1)
    state = TrustRegion.replay(10.0, [9.0] * (9 * 4), 6, restart_length=0.4)
    assert (state.length, state.restarts) == (0.4, 2)
    state = TrustRegion.replay_elsewhere(
        [10.0] + [9.0] * (5 * 4), np.zeros((21, 6)), 1, 6, restart_length=0.4
    )
    assert (state.length, state.restarts) == (0.4, 1)


def test_the_box_settings_are_checked_before_any_work() -> None:
    space = {f"p{i}": FloatDistribution(0.1, 1.0) for i in range(4)}
    features = np.eye(4)
    sampler = BOCRSampler(space, features=features, n_clusters=2, trust_region_length=0.4)
    assert sampler._plan.trust_region_length == 0.4
    assert BOCRSampler(space, features=features, n_clusters=2)._plan.trust_region_length == (
        INIT_LENGTH
    )
    for bad in (0.0, 0.01, 2.0, -0.2):
        with pytest.raises(ValueError, match=r"trust_region_length must be a number in \["):
            BOCRSampler(space, features=features, n_clusters=2, trust_region_length=bad)
    for bad in (True, "0.2", None):
        with pytest.raises(TypeError, match="trust_region_length must be a number"):
            BOCRSampler(space, features=features, n_clusters=2, trust_region_length=bad)
    restart = BOCRSampler(space, features=features, n_clusters=2, trust_region_restart_length=0.4)
    assert restart._plan.trust_region_restart_length == 0.4
    assert (
        BOCRSampler(space, features=features, n_clusters=2)._plan.trust_region_restart_length
        is None
    )
    with pytest.raises(ValueError, match=r"trust_region_restart_length must be a number in \["):
        BOCRSampler(space, features=features, n_clusters=2, trust_region_restart_length=0.01)
    with pytest.raises(TypeError, match="trust_region_restart_length must be a number"):
        BOCRSampler(space, features=features, n_clusters=2, trust_region_restart_length="0.4")
    assert (
        BOCRSampler(
            space, features=features, n_clusters=2, trust_region_improvement=0
        )._plan.trust_region_improvement
        == 0.0
    )
    for bad in (-1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="trust_region_improvement must be a finite number"):
            BOCRSampler(space, features=features, n_clusters=2, trust_region_improvement=bad)
    with pytest.raises(TypeError, match="trust_region_improvement must be a number"):
        BOCRSampler(space, features=features, n_clusters=2, trust_region_improvement="0")


def test_box_is_weighted_by_the_lengthscales_and_stays_in_the_cube() -> None:
    state = TrustRegion(length=0.4, restarts=0)
    lower, upper = state.box(np.array([0.5, 0.5, 0.95]), np.array([1.0, 4.0, 0.25]))
    # Weights 1, 4, 1/4 (geometric mean 1): sides 0.4, 1.6 (clipped), 0.1.
    np.testing.assert_allclose(lower, [0.3, 0.0, 0.9])
    np.testing.assert_allclose(upper, [0.7, 1.0, 1.0])


def test_log_ei_is_optimised_inside_the_box() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((20, 3))
    y = -np.sum((x - 0.9) ** 2, axis=1)
    y_std = (y - y.mean()) / y.std()
    posterior, best = Posterior(fit_gp(x, y_std)[0]), float(y_std.max())
    lower, upper = np.array([0.1, 0.2, 0.0]), np.array([0.4, 0.5, 0.3])
    points, values = optimize_log_ei(
        posterior, best=best, dim=3, rng=rng, warm_starts=x[:1], box=(lower, upper)
    )
    assert np.all(points >= lower) and np.all(points <= upper)
    assert np.all(np.diff(values) <= 0)
    # At least as good as the best point of a fine grid of the box.
    axes = [np.linspace(lo, hi, 21) for lo, hi in zip(lower, upper, strict=True)]
    grid = np.stack(np.meshgrid(*axes), -1).reshape(-1, 3)
    with torch.no_grad():
        grid_values = log_ei(*posterior(torch.from_numpy(grid)), best).numpy()
    assert values[0] >= grid_values.max() - 1e-6


@pytest.mark.parametrize(
    ("incumbent", "acquisition"),
    [("observed", "log_ei"), ("mean", "log_ei"), ("observed", "thompson")],
)
def test_the_sampler_proposes_inside_the_replayed_box(
    tmp_path: Path, incumbent: str, acquisition: str
) -> None:
    names = [f"p{i}" for i in range(6)]
    space = {n: FloatDistribution(0.1, 1.0) for n in names}
    target = np.array([0.3, 0.35, 0.4, 0.8, 0.85, 0.9])
    vectors = np.array([[1.0, 10], [1.1, 11], [0.9, 9], [5.0, 1], [5.2, 1.1], [4.9, 0.9]])
    sampler = BOCRSampler(
        space,
        features=vectors,
        n_clusters=2,
        rollback_at=(8,),
        n_startup_trials=4,
        trust_region=True,
        incumbent=incumbent,  # type: ignore[arg-type]
        acquisition=acquisition,  # type: ignore[arg-type]
        seed=0,
    )
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'db.sqlite3'}", direction="maximize", sampler=sampler
    )

    def objective(trial: optuna.Trial) -> float:
        x = np.array([trial.suggest_float(n, 0.1, 1.0) for n in names])
        # A rugged term, as a finite validation split gives: the best observation is partly luck.
        return -float(np.sum((x - target) ** 2)) + 0.05 * float(np.sin(40.0 * x.sum()))

    study.optimize(objective, n_trials=16)
    trials = study.trials
    smaller = moved = 0
    for t in trials[9:]:
        fit = gp_fit(t)
        assert fit is not None and fit[0] == 1
        history = read_history(trials, names, t.number, 1.0)
        numbers = np.asarray(history.obs_numbers)
        state = TrustRegion.replay(
            float(history.obs_values[numbers < 8].max()),
            history.obs_values[numbers >= 8],
            6,
        )
        units = (history.obs_params - 0.1) / 0.9
        y = history.obs_values
        ls = Hyperparameters.from_theta(torch.from_numpy(fit[1])).lengthscale.numpy()
        centre = int(np.argmax(y))
        if incumbent == "mean":
            y_std = torch.from_numpy(transform_outcomes(y, "yeo-johnson"))  # the default
            gp = FittedGP(torch.from_numpy(units), y_std, fit[1])
            with torch.no_grad():
                means = Posterior(gp)(torch.from_numpy(units))[0].numpy()
            moved += int(np.argmax(means)) != centre
            centre = int(np.argmax(means))
        lower, upper = state.box(units[centre], ls)
        proposal = stored_proposal(t, 6)
        assert proposal is not None
        u = (proposal - 0.1) / 0.9
        assert np.all(u >= lower - 1e-9) and np.all(u <= upper + 1e-9), t.number
        smaller += bool(np.any(upper - lower < 0.99))
    assert smaller >= 5  # of 7 proposals
    if incumbent == "mean":
        assert moved >= 1  # the best mean is not always the best observation
    with pytest.raises(TypeError, match="trust_region"):
        BOCRSampler(space, features=vectors, trust_region=1)
    with pytest.raises(ValueError, match="incumbent must be 'observed' or 'mean'"):
        BOCRSampler(space, features=vectors, incumbent="best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pass trust_region=True"):
        BOCRSampler(space, features=vectors, trust_region=False, incumbent="mean")


def test_a_restart_elsewhere_centres_on_the_best_observation_outside_the_box_it_leaves() -> None:
    dim = 2
    points = np.array([[0.5, 0.5], [0.95, 0.95], [0.55, 0.5], [0.05, 0.05]] + [[0.5, 0.52]] * 20)
    values = np.array([10.0, 8.0, 9.5, 7.0] + [9.0] * 20)
    # Before any restart: the best observation, and the same side as a plain replay.
    state = TrustRegion.replay_elsewhere(values[:10], points[:10], 4, dim)
    plain = TrustRegion.replay(10.0, values[4:10], dim)
    assert (state.length, state.restarts, state.center) == (plain.length, 0, 0)
    # 20 failures (4 per halving) restart it: the best point more than 0.4 away from the
    # centre in some coordinate is trial 1 (trial 2, better, is 0.05 away).
    state = TrustRegion.replay_elsewhere(values, points, 4, dim)
    assert (state.length, state.restarts, state.center) == (INIT_LENGTH, 1, 1)
    assert TrustRegion.replay(10.0, values[4:], dim).center is None
    # New bests then count against that run's best (8.0): three in a row double the side.
    more = np.concatenate([values, [8.5, 8.7, 8.9]])
    near = np.concatenate([points, [[0.9, 0.8]] * 3])
    state = TrustRegion.replay_elsewhere(more, near, 4, dim)
    assert (state.length, state.center) == (2 * INIT_LENGTH, len(more) - 1)
    # Nothing away from the centre: it stays.
    assert restart_center(values[:3], points[[0, 0, 0]], 0, 0.4) == 0


NAMES4 = [f"p{i}" for i in range(4)]


def _lucky_outlier_trials(tmp_path: Path, **sampler_kwargs: Any) -> list[FrozenTrial]:
    """30 trials of a 4-parameter study whose trial 1 no later trial beats.

    The rollback to one variable per parameter comes at trial 6; then 20 trials without a
    new best shrink the box below 1/32 (five halvings at 4 variables), and it starts again
    at trial 26.
    """
    sampler = BOCRSampler(
        {n: FloatDistribution(0.0, 1.0) for n in NAMES4},
        features=np.array([[1.0, 10], [1.1, 11], [5.0, 1], [5.2, 1.1]]),
        n_clusters=2,
        rollback_at=(6,),
        n_startup_trials=4,
        seed=0,
        **sampler_kwargs,
    )
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'db.sqlite3'}", direction="maximize", sampler=sampler
    )

    def objective(trial: optuna.Trial) -> float:
        x = np.array([trial.suggest_float(n, 0.0, 1.0) for n in NAMES4])
        return 100.0 if trial.number == 1 else -float(np.sum((x - 0.3) ** 2))

    study.optimize(objective, n_trials=30)
    return study.trials


def _lengthscales(trial: FrozenTrial) -> np.ndarray:
    fit = gp_fit(trial)
    assert fit is not None and fit[0] == 1
    return Hyperparameters.from_theta(torch.from_numpy(fit[1])).lengthscale.numpy()


def test_restart_elsewhere_proposes_around_the_centre_it_replays(tmp_path: Path) -> None:
    trials = _lucky_outlier_trials(tmp_path, restart="elsewhere")
    elsewhere = 0
    for t in trials[7:]:
        history = read_history(trials, NAMES4, t.number, 1.0)
        numbers = np.asarray(history.obs_numbers)
        state = TrustRegion.replay_elsewhere(
            history.obs_values, history.obs_params, int((numbers < 6).sum()), 4
        )
        assert state.center is not None
        lower, upper = state.box(history.obs_params[state.center], _lengthscales(t))
        proposal = stored_proposal(t, 4)
        assert proposal is not None
        assert np.all(proposal >= lower - 1e-9) and np.all(proposal <= upper + 1e-9), t.number
        elsewhere += history.obs_numbers[state.center] != 1
    assert state.restarts == 1 and elsewhere >= 3  # trials 27-29 search around another point
    with pytest.raises(ValueError, match="restart must be one of 'incumbent', 'elsewhere'"):
        BOCRSampler(
            {n: FloatDistribution(0.0, 1.0) for n in NAMES4},
            features=np.eye(4),
            restart="far",  # type: ignore[arg-type]
        )


@pytest.mark.parametrize("restart_length", [None, 0.4])
def test_the_sampler_starts_its_box_again_at_the_restart_side(
    tmp_path: Path, restart_length: float | None
) -> None:
    trials = _lucky_outlier_trials(tmp_path, trust_region_restart_length=restart_length)
    outside_smaller = 0
    for t in trials[26:]:
        history = read_history(trials, NAMES4, t.number, 1.0)
        numbers = np.asarray(history.obs_numbers)
        before, stage = history.obs_values[numbers < 6], history.obs_values[numbers >= 6]
        state = TrustRegion.replay(float(before.max()), stage, 4, restart_length=restart_length)
        assert (state.length, state.restarts) == (restart_length or INIT_LENGTH, 1)
        ls = _lengthscales(t)
        proposal = stored_proposal(t, 4)
        assert proposal is not None
        lower, upper = state.box(history.obs_params[1], ls)
        assert np.all(proposal >= lower - 1e-9) and np.all(proposal <= upper + 1e-9), t.number
        lower, upper = TrustRegion(0.4, 1).box(history.obs_params[1], ls)
        outside_smaller += bool(np.any(proposal < lower - 1e-9) or np.any(proposal > upper + 1e-9))
    # Started again at the first side (0.8), log-EI leaves the box of side 0.4 toward the
    # optimum; started at 0.4, it cannot.
    assert (outside_smaller >= 2) if restart_length is None else (outside_smaller == 0)
