"""The surrogate: plain-torch marginal likelihood and posterior against GPyTorch's."""

from __future__ import annotations

import gpytorch
import numpy as np
import pytest
import torch

from optuna_bocr.sampler._gp import default_theta
from optuna_bocr.sampler._gp import fit_gp
from optuna_bocr.sampler._gp import FittedGP
from optuna_bocr.sampler._gp import loss_and_gradient
from optuna_bocr.sampler._gp import neg_log_marginal
from optuna_bocr.sampler._gpytorch_model import ExactGPModel
from optuna_bocr.sampler._gpytorch_model import gpytorch_model
from optuna_bocr.sampler._posterior import Posterior


def _data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, d))
    y = np.sin(6 * x[:, 0]) + x[:, 1] ** 2
    return x, (y - y.mean()) / y.std()


def gpytorch_loss_and_gradient(
    theta: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[float, np.ndarray]:
    """GPyTorch's training loss at raw hyperparameters ``theta``, and its gradient in them."""
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    model = gpytorch_model(FittedGP(tx, ty, theta))
    model.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    loss = -mll(model(tx), ty)
    loss.backward()
    grad = np.concatenate([p.grad.reshape(-1).numpy() for p in model.parameters()])
    return float(loss.item()), grad


def test_default_start_is_gpytorch_initialisation() -> None:
    x, y = _data(5, 4)
    model = ExactGPModel(torch.from_numpy(x), torch.from_numpy(y))
    raw = np.concatenate([p.detach().reshape(-1).numpy() for p in model.parameters()])
    np.testing.assert_allclose(default_theta(4), raw, atol=1e-6)


@pytest.mark.parametrize(("n", "d"), [(12, 2), (40, 7)])
def test_marginal_likelihood_and_gradient_match_gpytorch(n: int, d: int) -> None:
    x, y = _data(n, d)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    theta = default_theta(d) + np.random.default_rng(1).normal(0.0, 0.5, d + 3)
    ref_loss, ref_grad = gpytorch_loss_and_gradient(theta, x, y)
    value, grad = loss_and_gradient(theta, tx, ty)
    assert value == pytest.approx(ref_loss, rel=1e-7)
    assert float(neg_log_marginal(torch.from_numpy(theta), tx, ty)) == pytest.approx(value)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-8)


def test_posterior_matches_gpytorch_prediction() -> None:
    x, y = _data(15, 3)
    fitted, _ = fit_gp(x, y)
    model = gpytorch_model(fitted)
    xt = torch.from_numpy(np.random.default_rng(2).random((20, 3)))
    with torch.no_grad(), gpytorch.settings.fast_pred_var(False):
        ref = model(xt)
        mean, var = Posterior(fitted)(xt)
    np.testing.assert_allclose(mean.numpy(), ref.mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(var.numpy(), ref.variance.numpy(), atol=1e-6)


def test_posterior_gradients_match_autograd() -> None:
    x, y = _data(30, 4)
    post = Posterior(fit_gp(x, y)[0])
    q = np.random.default_rng(3).random((6, 4))
    q[0] = x[5]  # At a training point too.
    tq = torch.from_numpy(q).requires_grad_(True)
    mean, var = post(tq)
    (d_mean,) = torch.autograd.grad(mean.sum(), tq, retain_graph=True)
    (d_var,) = torch.autograd.grad(var.sum(), tq)
    m2, v2, dm2, dv2 = post.with_gradients(torch.from_numpy(q))
    np.testing.assert_allclose(m2.numpy(), mean.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(v2.numpy(), var.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(dm2.numpy(), d_mean.numpy(), atol=1e-7)
    np.testing.assert_allclose(dv2.numpy(), d_var.numpy(), atol=1e-7)


def test_fit_recovers_the_order_of_relevance() -> None:
    # Strong in x0, weak in x1, none in x2: the lengthscales come out in that order.
    rng = np.random.default_rng(4)
    x = rng.random((60, 3))
    y = np.sin(5 * x[:, 0]) + 0.3 * x[:, 1]
    fitted, theta = fit_gp(x, (y - y.mean()) / y.std())
    ls = fitted.hyperparameters.lengthscale.numpy()
    assert ls[0] < ls[1] < ls[2]
    # Deterministic, and a warm start from the optimum stays there.
    assert np.array_equal(fit_gp(x, (y - y.mean()) / y.std())[1], theta)
    _, again = fit_gp(x, (y - y.mean()) / y.std(), warm_start=theta)
    np.testing.assert_allclose(again, theta, atol=1e-3)


def test_fantasies_shrink_the_variance_at_pending_points() -> None:
    x, y = _data(15, 3)
    post = Posterior(fit_gp(x, y)[0])
    pending = np.random.default_rng(5).random((2, 3))
    fantasised, values = post.with_fantasies(pending)
    tp = torch.from_numpy(pending)
    with torch.no_grad():
        before_mean, before_var = post(tp)
        _, after_var = fantasised(tp)
    assert np.all(after_var.numpy() < 0.5 * before_var.numpy())
    np.testing.assert_allclose(values, before_mean.numpy())
    same, none = post.with_fantasies(pending[:0])
    assert same is post and none.size == 0
