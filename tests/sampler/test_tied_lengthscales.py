"""Tied lengthscales: the fit against GPyTorch's loss, the plan's groups, the sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
import pytest
import torch

from optuna_bocr import BOCRSampler
from optuna_bocr.sampler._gp import _Tying
from optuna_bocr.sampler._gp import default_theta
from optuna_bocr.sampler._gp import fit_gp
from optuna_bocr.sampler._gp import loss_and_gradient
from optuna_bocr.sampler._plan import tied_lengthscales
from optuna_bocr.sampler._storage import gp_fit
from tests.sampler.test_gp import gpytorch_loss_and_gradient

optuna.logging.set_verbosity(optuna.logging.WARNING)

GROUPS = np.array([0, 0, 1, 2, 1, 0])


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, len(GROUPS)))
    y = np.sin(4.0 * (x[:, 0] + x[:, 1] + x[:, 5])) + 0.5 * x[:, 2] + 0.05 * rng.normal(size=n)
    return x, (y - y.mean()) / y.std()


def test_tied_gradient_is_gpytorch_gradient_summed_per_group() -> None:
    x, y = _data(25)
    tying = _Tying(len(GROUPS), GROUPS)
    tied = np.concatenate([default_theta(6)[:3], [0.3, -0.5, 1.2]])
    full = tying.expand(tied)
    assert np.array_equal(full[3:], tied[3:][GROUPS])
    np.testing.assert_allclose(tying.tie(full), tied)
    ref_loss, ref_grad = gpytorch_loss_and_gradient(full, x, y)
    value, grad = loss_and_gradient(full, torch.from_numpy(x), torch.from_numpy(y))
    assert value == pytest.approx(ref_loss, rel=1e-7)
    summed = np.concatenate([ref_grad[:3], np.bincount(GROUPS, weights=ref_grad[3:])])
    np.testing.assert_allclose(tying.reduce_gradient(grad), summed, rtol=1e-5, atol=1e-8)


def test_tied_fit_is_a_stationary_point_of_gpytorch_loss_on_the_tie() -> None:
    x, y = _data(40)
    fitted, theta = fit_gp(x, y, groups=GROUPS)
    assert theta.shape == (9,) and np.array_equal(fitted.theta, theta)
    ls = fitted.hyperparameters.lengthscale.numpy()
    for g in range(3):
        assert np.ptp(ls[GROUPS == g]) == 0.0
    # The group of the three dimensions in the sine is the shortest.
    assert ls[0] < ls[2] and ls[0] < ls[3]
    ref_loss, ref_grad = gpytorch_loss_and_gradient(theta, x, y)
    on_tie = np.concatenate([ref_grad[:3], np.bincount(GROUPS, weights=ref_grad[3:])])
    assert np.abs(on_tie).max() < 1e-3
    # A tie is a constraint: ARD's own fit reaches a lower loss.
    ard = fit_gp(x, y)[1]
    assert gpytorch_loss_and_gradient(ard, x, y)[0] < ref_loss


def test_an_ard_warm_start_is_tied_and_a_tied_one_kept() -> None:
    x, y = _data(40)
    ard = fit_gp(x, y)[1]
    _, from_ard = fit_gp(x, y, ard, groups=GROUPS)
    for g in range(3):
        assert np.ptp(from_ard[3:][GROUPS == g]) == 0.0
    _, tied = fit_gp(x, y, groups=GROUPS)
    _, again = fit_gp(x, y, tied, groups=GROUPS)
    np.testing.assert_allclose(again, tied, atol=1e-3)
    # Without groups nothing changes: the same fit as before, deterministic.
    assert np.array_equal(fit_gp(x, y, groups=None)[1], ard)


@pytest.mark.parametrize(
    "groups",
    [np.array([0, 0, 1]), np.array([0, 0, 2, 2, 2, 2]), np.array([0, 1, 2, 3, 4, -1])],
)
def test_groups_that_do_not_number_every_dimension_are_refused(groups: np.ndarray) -> None:
    x, y = _data(10)
    with pytest.raises(ValueError, match="groups"):
        fit_gp(x, y, groups=groups)
    with pytest.raises(ValueError, match="integers"):
        fit_gp(x, y, groups=GROUPS.astype(float))


def test_plan_ties_each_later_stage_by_first_stage_clusters() -> None:
    clusters = [
        [[0, 1, 2], [3, 4, 5]],
        [[0, 1], [2], [3, 4, 5]],
        [[0], [1], [2], [3], [4], [5]],
    ]
    assert tied_lengthscales("ard", clusters) == (None, None, None)
    assert tied_lengthscales("shared", clusters) == (None, (0, 0, 0), (0,) * 6)
    assert tied_lengthscales("clusters", clusters) == (None, (0, 0, 1), (0, 0, 0, 1, 1, 1))
    # Numbered in order of first appearance, whichever first-stage cluster comes first.
    assert tied_lengthscales("clusters", [[[1, 2], [0, 3]], [[0], [1], [2], [3]]]) == (
        None,
        (0, 1, 1, 0),
    )


def _study(tmp_path: Path, lengthscales: str, box: str = "model") -> optuna.Study:
    names = [f"p{i}" for i in range(6)]
    vectors = np.array([[1.0, 10], [1.1, 11], [0.9, 9], [5.0, 1], [5.2, 1.1], [4.9, 0.9]])
    tmp_path.mkdir(exist_ok=True)
    sampler = BOCRSampler(
        {n: FloatDistribution(0.0, 1.0) for n in names},
        features=vectors,
        n_clusters=2,
        rollback_at=(8,),
        n_startup_trials=4,
        lengthscales=lengthscales,  # type: ignore[arg-type]
        box_lengthscales=box,  # type: ignore[arg-type]
        seed=0,
    )
    assert sampler.clusters(0) == [names[:3], names[3:]]
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'db.sqlite3'}", direction="maximize", sampler=sampler
    )
    target = np.array([0.2, 0.3, 0.4, 0.7, 0.8, 0.9])

    def objective(trial: optuna.Trial) -> float:
        x = np.array([trial.suggest_float(n, 0.0, 1.0) for n in names])
        return -float(np.sum((x - target) ** 2))

    study.optimize(objective, n_trials=12)
    return study


@pytest.mark.parametrize(
    ("lengthscales", "groups"),
    [("shared", [0] * 6), ("clusters", [0, 0, 0, 1, 1, 1])],
)
def test_the_sampler_fits_tied_lengthscales_after_the_first_stage(
    tmp_path: Path, lengthscales: str, groups: list[int]
) -> None:
    fits = [gp_fit(t) for t in _study(tmp_path, lengthscales).trials]
    first = [f[1] for f in fits if f is not None and f[0] == 0]
    later = [f[1] for f in fits if f is not None and f[0] == 1]
    assert first and len(later) >= 3
    assert all(np.ptp(theta[3:]) > 0 for theta in first)  # two clusters, two lengthscales
    index = np.asarray(groups)
    for theta in later:
        assert theta.shape == (9,)
        assert all(np.ptp(theta[3:][index == g]) == 0.0 for g in set(groups))
        if lengthscales == "clusters":
            assert theta[3] != theta[6]


def test_an_ard_box_beside_a_shared_lengthscale(tmp_path: Path) -> None:
    # The stored fit is the ARD one that weights the box (and warm-starts the next); the
    # tied GP ranks the candidates, so the proposals differ from both other modes'.
    studies = {
        mode: _study(tmp_path / mode, ls, box)
        for mode, ls, box in [("cube", "shared", "model"), ("ard", "ard", "model"),
                              ("box", "shared", "ard")]
    }  # fmt: skip
    later = [f[1] for t in studies["box"].trials if (f := gp_fit(t)) is not None and f[0] == 1]
    assert len(later) >= 3 and all(np.ptp(theta[3:]) > 0 for theta in later)
    params = {m: [t.params for t in s.trials[9:]] for m, s in studies.items()}
    assert params["box"] != params["cube"] and params["box"] != params["ard"]


def test_an_unknown_lengthscales_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="lengthscales must be one of 'ard', 'shared'"):
        BOCRSampler(
            {"a": FloatDistribution(0, 1), "b": FloatDistribution(0, 1)},
            features=[[0.0, 1.0], [1.0, 0.0]],
            n_clusters=1,
            lengthscales="tied",  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="box_lengthscales must be one of 'model', 'ard'"):
        BOCRSampler(
            {"a": FloatDistribution(0, 1), "b": FloatDistribution(0, 1)},
            features=[[0.0, 1.0], [1.0, 0.0]],
            n_clusters=1,
            box_lengthscales="cube",  # type: ignore[arg-type]
        )
