"""Log expected improvement and its optimiser."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import ndtr
import torch

from optuna_bocr.sampler._acquisition import log_ei
from optuna_bocr.sampler._acquisition import log_ei_with_gradient
from optuna_bocr.sampler._acquisition import optimize_log_ei
from optuna_bocr.sampler._acquisition import standard_log_ei
from optuna_bocr.sampler._gp import fit_gp
from optuna_bocr.sampler._posterior import Posterior


def test_standard_log_ei_matches_the_direct_formula() -> None:
    z = np.linspace(-20.0, 6.0, 261)
    direct = np.log(np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) + z * ndtr(z))
    np.testing.assert_allclose(standard_log_ei(torch.from_numpy(z)).numpy(), direct, rtol=1e-9)


def test_standard_log_ei_is_stable_far_below_the_incumbent() -> None:
    z = torch.tensor([-24.9, -25.1, -40.0, -100.0, -1e3], dtype=torch.float64)
    values = standard_log_ei(z).numpy()
    assert np.all(np.isfinite(values)) and np.all(np.diff(values) < 0)
    # Asymptotically EI(z) = phi(z) / z^2 (1 + O(1 / z^2)).
    zz = z.numpy()
    asymptote = -0.5 * zz * zz - 0.5 * math.log(2 * math.pi) - 2 * np.log(-zz)
    np.testing.assert_allclose(values[2:], asymptote[2:], atol=2e-3)
    # Continuous across the switch between the two formulas at z = -25.
    at = standard_log_ei(torch.tensor([-25.0 - 1e-9, -25.0 + 1e-9], dtype=torch.float64)).numpy()
    assert at[0] == pytest.approx(at[1], abs=1e-6)
    assert log_ei(torch.tensor([0.0]), torch.tensor([1.0]), 0.0).item() == pytest.approx(
        math.log(1 / math.sqrt(2 * math.pi))
    )


def _posterior() -> tuple[Posterior, float, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((25, 2))
    y = -((x[:, 0] - 0.3) ** 2) - (x[:, 1] - 0.7) ** 2
    y = (y - y.mean()) / y.std()
    return Posterior(fit_gp(x, y)[0]), float(y.max()), x


def test_log_ei_gradient_matches_autograd() -> None:
    post, best, _ = _posterior()
    q = np.random.default_rng(1).random((5, 2))
    tq = torch.from_numpy(q).requires_grad_(True)
    mean, var = post(tq)
    ref = log_ei(mean, var, best)
    (ref_grad,) = torch.autograd.grad(ref.sum(), tq)
    values, grads = log_ei_with_gradient(post, q, best)
    np.testing.assert_allclose(values, ref.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(grads, ref_grad.numpy(), rtol=1e-6, atol=1e-9)


def test_optimiser_finds_the_maximum_of_log_ei() -> None:
    post, best, x = _posterior()
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 201), np.linspace(0, 1, 201)), -1)
    grid = grid.reshape(-1, 2)
    with torch.no_grad():
        grid_values = log_ei(*post(torch.from_numpy(grid)), best).numpy()
    points, values = optimize_log_ei(
        post, best=best, dim=2, rng=np.random.default_rng(2), warm_starts=x[:1]
    )
    assert np.all((points >= 0) & (points <= 1)) and np.all(np.diff(values) <= 0)
    assert values[0] >= grid_values.max() - 1e-6
    assert np.max(np.abs(points[0] - grid[np.argmax(grid_values)])) < 0.02
