"""Thompson sampling in the trust region's box: the joint posterior draw and its candidates."""

from __future__ import annotations

import numpy as np
from optuna.distributions import FloatDistribution
import pytest
import torch

from optuna_bocr import BOCRSampler
from optuna_bocr.sampler._gp import fit_gp
from optuna_bocr.sampler._posterior import Posterior
from optuna_bocr.sampler._thompson import MAX_CANDIDATES
from optuna_bocr.sampler._thompson import thompson_candidates


def _posterior(dim: int, n: int = 30, seed: int = 0) -> tuple[Posterior, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, dim))
    y = x[:, 0] - 0.5 * np.sum((x[:, 1:] - 0.5) ** 2, axis=1)
    return Posterior(fit_gp(x, (y - y.mean()) / y.std())[0]), x


def test_a_draw_has_the_posterior_mean_and_covariance() -> None:
    posterior, _ = _posterior(3)
    points = torch.from_numpy(np.array([[0.2, 0.5, 0.5], [0.21, 0.5, 0.5], [0.9, 0.1, 0.9]]))
    with torch.no_grad():
        mean, var = posterior(points)
        assert torch.allclose(
            posterior.sample(points, torch.zeros(3, dtype=torch.float64)), mean, atol=1e-9
        )
        rng = np.random.default_rng(1)
        draws = torch.stack(
            [
                posterior.sample(points, torch.from_numpy(rng.standard_normal(3)))
                for _ in range(4000)
            ]
        ).numpy()
    assert np.allclose(draws.mean(0), mean.numpy(), atol=4 * np.sqrt(var.numpy() / 4000))
    assert np.allclose(draws.var(0), var.numpy(), rtol=0.1)
    # Two close points move together; a far one does not follow them as closely.
    corr = np.corrcoef(draws.T)
    assert corr[0, 1] > 0.95 and corr[0, 1] > abs(corr[0, 2])


@pytest.mark.parametrize(("dim", "count"), [(3, 512), (9, 1024), (27, MAX_CANDIDATES)])
def test_the_candidates_perturb_the_centre_inside_the_box(dim: int, count: int) -> None:
    posterior, _ = _posterior(dim, n=40)
    center = np.full(dim, 0.4)
    lower, upper = np.full(dim, 0.2), np.full(dim, 0.7)
    rng = np.random.default_rng(2)
    candidates = thompson_candidates(posterior, center=center, box=(lower, upper), rng=rng)
    assert candidates.shape == (count, dim)
    assert np.all(candidates >= lower) and np.all(candidates <= upper)
    perturbed = candidates != center
    assert np.all(perturbed.any(axis=1))  # no candidate is the centre itself
    # TuRBO's mask: each coordinate with probability min(1, 20 / dim).
    assert abs(perturbed.mean() - min(1.0, 20.0 / dim)) < 0.03


def test_the_draw_ranks_the_candidates() -> None:
    # The function rises along the first coordinate; the best-ranked candidates lie there.
    posterior, _ = _posterior(4, n=60)
    box = (np.zeros(4), np.ones(4))
    for seed in range(5):
        candidates = thompson_candidates(
            posterior, center=np.full(4, 0.5), box=box, rng=np.random.default_rng(seed)
        )
        assert candidates[:50, 0].mean() > candidates[-50:, 0].mean() + 0.1


def test_a_wrong_acquisition_is_refused_in_one_line() -> None:
    space = {f"p{i}": FloatDistribution(0.0, 1.0) for i in range(3)}
    with pytest.raises(ValueError, match="acquisition must be one of 'log_ei', 'thompson'"):
        BOCRSampler(space, features=np.eye(3), acquisition="ucb")  # type: ignore[arg-type]
