"""What the GP is fitted on: the transforms of the observed values, and the sampler's use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
import pytest
from scipy.stats import norm

from optuna_bocr import BOCRSampler
from optuna_bocr.keys import STAGE_KEY
from optuna_bocr.sampler._outcome import OUTCOME_TRANSFORMS
from optuna_bocr.sampler._outcome import stage_outcome
from optuna_bocr.sampler._outcome import transform_outcomes
from optuna_bocr.sampler._storage import gp_fit

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _accuracies(seed: int = 0) -> np.ndarray:
    """A pruning study's values: most within a point of 90, a few tens of points lower."""
    rng = np.random.default_rng(seed)
    return np.concatenate([90.0 + rng.normal(0.0, 0.3, 25), [62.0, 71.5, 80.0]])


@pytest.mark.parametrize("kind", OUTCOME_TRANSFORMS)
def test_every_transform_keeps_the_order_and_the_gp_scale(kind: str) -> None:
    y = _accuracies()
    z = transform_outcomes(y, kind)  # type: ignore[arg-type]
    assert z.shape == y.shape
    np.testing.assert_array_equal(np.argsort(z, kind="stable"), np.argsort(y, kind="stable"))
    assert abs(z.mean()) < 1e-12 and abs(z.std() - 1.0) < 1e-12


def test_warps_spread_the_networks_the_search_compares() -> None:
    # The 25 good values span a small part of the standardised scale (the 3 bad ones set
    # it); both warps give them a larger part of it.
    y = _accuracies()
    good = slice(0, 25)
    spread = {k: np.ptp(transform_outcomes(y, k)[good]) for k in OUTCOME_TRANSFORMS}  # type: ignore[arg-type]
    assert spread["standardize"] < 0.6
    assert spread["yeo-johnson"] > 2.0 * spread["standardize"]
    assert spread["rank"] > 2.0 * spread["standardize"]


def test_rank_is_the_normal_quantiles_of_mid_ranks() -> None:
    y = np.array([3.0, 1.0, 2.0, 2.0, 10.0])
    q = norm.ppf((np.array([4.0, 1.0, 2.5, 2.5, 5.0]) - 0.5) / 5)
    np.testing.assert_allclose(transform_outcomes(y, "rank"), (q - q.mean()) / q.std())


@pytest.mark.parametrize("kind", OUTCOME_TRANSFORMS)
def test_constant_or_few_values_are_only_standardised(kind: str) -> None:
    assert not transform_outcomes(np.full(5, 7.0), kind).any()  # type: ignore[arg-type]
    np.testing.assert_array_equal(transform_outcomes(np.array([1.0, 3.0]), kind), [-1.0, 1.0])  # type: ignore[arg-type]


def _study(tmp_path: Path, kind: str) -> optuna.Study:
    names = [f"p{i}" for i in range(4)]
    sampler = BOCRSampler(
        {n: FloatDistribution(0.0, 1.0) for n in names},
        features=np.array([[1.0], [1.1], [5.0], [5.2]]),
        n_clusters=2,
        rollback_at=(8,),
        n_startup_trials=4,
        outcome_transform=kind,  # type: ignore[arg-type]
        seed=0,
    )
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / f'{kind}.sqlite3'}", direction="maximize", sampler=sampler
    )

    def objective(trial: optuna.Trial) -> float:
        x = np.array([trial.suggest_float(n, 0.0, 1.0) for n in names])
        # Accuracy-like: a plateau near 90 that falls off steeply where a ratio is small.
        return float(90.0 - np.sum((x - 0.7) ** 2) - 40.0 * np.sum(np.maximum(0.3 - x, 0.0)))

    study.optimize(objective, n_trials=14)
    return study


def test_the_sampler_fits_its_gp_on_the_transformed_values(tmp_path: Path) -> None:
    studies = {k: _study(tmp_path, k) for k in ("standardize", "yeo-johnson")}
    for study in studies.values():
        assert len(study.trials) == 14 and all(t.value is not None for t in study.trials)
        assert any(gp_fit(t) is not None for t in study.trials)
    # Same seed, same Sobol design; the GP's fit and so the proposals differ after it.
    params = {k: [t.params for t in s.trials] for k, s in studies.items()}
    assert params["standardize"][:4] == params["yeo-johnson"][:4]
    assert params["standardize"][4:] != params["yeo-johnson"][4:]


def test_after_first_warps_every_stage_but_the_first_of_several() -> None:
    after = "yeo-johnson-after-first"
    assert [stage_outcome(after, s, 3) for s in range(3)] == [
        "standardize",
        "yeo-johnson",
        "yeo-johnson",
    ]
    assert stage_outcome(after, 0, 1) == "yeo-johnson"  # one stage: nothing coarse to spare
    assert [stage_outcome("rank", s, 2) for s in range(2)] == ["rank", "rank"]


def test_after_first_fits_the_first_stage_standardised_and_the_next_warped(
    tmp_path: Path,
) -> None:
    studies = {k: _study(tmp_path, k) for k in ("standardize", "yeo-johnson-after-first")}
    params = {k: [t.params for t in s.trials] for k, s in studies.items()}
    stages = [t.user_attrs[STAGE_KEY] for t in studies["standardize"].trials]
    second = stages.index(1)  # the first stage has GP proposals (from trial 4) before it
    assert second > 4 and set(stages[second:]) == {1}
    # The first stage is the standardised GP's, trial for trial; from the second stage's
    # first trial on the warp changes the proposals.
    assert params["standardize"][:second] == params["yeo-johnson-after-first"][:second]
    assert params["standardize"][second] != params["yeo-johnson-after-first"][second]


def test_an_unknown_outcome_transform_is_refused() -> None:
    with pytest.raises(ValueError, match="outcome_transform must be one of 'standardize'"):
        BOCRSampler(
            {"a": FloatDistribution(0, 1), "b": FloatDistribution(0, 1)},
            features=[[0.0, 1.0], [1.0, 0.0]],
            n_clusters=1,
            outcome_transform="log",  # type: ignore[arg-type]
        )
