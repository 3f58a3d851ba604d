"""The surrogate: an exact GP on the unit cube, fitted by L-BFGS-B on the exact MLL.

Matern 5/2 kernel with one lengthscale per dimension (ARD) and an output scale, a constant
mean, and a learned Gaussian noise. Targets are standardised by the caller. The lengthscale
prior is the dimension-scaled log-normal of Hvarfner et al. ("Vanilla Bayesian Optimization
Performs Great in High Dimensions", ICML 2024): ``LogNormal(sqrt(2) + log(d) / 2, sqrt(3))``,
so that the prior expects smoother functions as the dimension grows.

:class:`~optuna_bocr.sampler._gpytorch_model.ExactGPModel` (GPyTorch) is the reference
definition of the model, its priors and its constraints. The fit here and the predictions
(:mod:`optuna_bocr.sampler._posterior`) use the same formulas in a few plain torch
operations: GPyTorch's per-call overhead would be most of a trial's time. The
hyperparameters are GPyTorch's raw (unconstrained) parameters, in the order of
``ExactGPModel.parameters()``: ``[raw noise, constant mean, raw output scale, raw
lengthscales...]``; the tests check the fit's loss and gradient, and the posterior,
against GPyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
import math

import numpy as np
from scipy.optimize import minimize
import torch

_SQRT2 = math.sqrt(2.0)
LENGTHSCALE_PRIOR_SCALE = math.sqrt(3.0)
"""Scale of the log-normal lengthscale prior (its location: :func:`lengthscale_prior_loc`)."""
MIN_NOISE = 1e-6
"""Lower bound of the noise variance."""
MIN_LENGTHSCALE = 2.5e-2
"""Lower bound of every lengthscale."""
NOISE_PRIOR = (-4.0, 1.0)
"""``(loc, scale)`` of the log-normal prior of the noise variance."""
_FIT_MAXITER = 150
# A fit warm-started from the previous trial's hyperparameters runs at most this many
# iterations: the optimisation is amortised over the trials (each one continues from where
# the last stopped). In the per-parameter stage (tens of lengthscales) an unbounded warm fit
# often runs to the full 150 iterations, mostly drifting the lengthscales of irrelevant
# dimensions, and costs more than the rest of the trial together. Five iterations per trial
# keep the time per trial under 0.1 s at 200 trials and 27 dimensions (2 CPU cores); the
# synthetic benchmark's regrets are the same as with 20 (benchmarks/README.md).
_FIT_MAXITER_WARM = 5
# Relative loss tolerance of the hyperparameter fit: a fit warm-started from the previous
# trial stops after a few steps (SciPy's default, 2.2e-9, costs 2-5x more, same BO result
# on the test problems).
_FIT_FTOL = 1e-6


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(x))``, the transform of GPyTorch's positive constraints."""
    return torch.logaddexp(x, torch.zeros_like(x))


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def _lognormal_log_pdf(x: torch.Tensor, loc: float, scale: float) -> torch.Tensor:
    log_x = torch.log(x)
    return (
        -log_x
        - math.log(scale * math.sqrt(2.0 * math.pi))
        - (log_x - loc) ** 2 / (2.0 * scale * scale)
    )


class _Matern52(torch.autograd.Function):
    """Matern 5/2 of the squared scaled distance ``d2``, with its exact derivative at 0.

    ``k = (1 + s + s^2 / 3) exp(-s)`` with ``s = sqrt(5 d2)``; ``dk / d(d2) = -5/6 (1 + s)
    exp(-s)`` is finite at ``d2 = 0``, where autograd through the square root is not.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, d2: torch.Tensor) -> torch.Tensor:
        s = torch.sqrt(5.0 * d2)
        e = torch.exp(-s)
        if ctx.needs_input_grad[0]:  # type: ignore[attr-defined]
            ctx.save_for_backward((-5.0 / 6.0) * (1.0 + s) * e)
        return (1.0 + s + (5.0 / 3.0) * d2) * e

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (deriv,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return deriv * grad


def sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between the rows of ``a`` and of ``b`` (one matmul)."""
    a2 = (a * a).sum(-1, keepdim=True)
    b2 = (b * b).sum(-1).unsqueeze(-2)
    return (a2 + b2 - 2.0 * a @ b.transpose(-1, -2)).clamp_min(0.0)


def matern52(a: torch.Tensor, b: torch.Tensor, lengthscale: torch.Tensor) -> torch.Tensor:
    """Unscaled Matern 5/2 ARD kernel matrix between the rows of ``a`` and ``b``."""
    out: torch.Tensor = _Matern52.apply(sq_dist(a / lengthscale, b / lengthscale))
    return out


def cholesky_with_jitter(k: torch.Tensor, base_jitter: float, tries: int) -> torch.Tensor:
    """Cholesky factor of ``k``, adding jitter (x10 per try) while it is not PD."""
    chol, info = torch.linalg.cholesky_ex(k)
    jitter = base_jitter
    for _ in range(tries):
        if int(info) == 0:
            return chol
        chol, info = torch.linalg.cholesky_ex(k + jitter * torch.eye(k.shape[-1], dtype=k.dtype))
        jitter *= 10.0
    if int(info) == 0:
        return chol
    raise RuntimeError("The GP kernel matrix is not positive definite.")


def lengthscale_prior_loc(dim: int) -> float:
    """Location of the log-normal lengthscale prior in ``dim`` dimensions."""
    return _SQRT2 + 0.5 * math.log(dim)


def default_theta(dim: int) -> np.ndarray:
    """Raw hyperparameters of :class:`ExactGPModel`'s deterministic start."""
    ls = math.exp(lengthscale_prior_loc(dim) - LENGTHSCALE_PRIOR_SCALE**2)
    return np.array(
        [
            _inv_softplus(math.exp(NOISE_PRIOR[0]) - MIN_NOISE),
            0.0,
            _inv_softplus(1.0),
            *[_inv_softplus(ls - MIN_LENGTHSCALE)] * dim,
        ]
    )


@dataclass(frozen=True)
class Hyperparameters:
    """Constrained GP hyperparameters (tensors, differentiable when ``theta`` is)."""

    noise: torch.Tensor
    mean: torch.Tensor
    outputscale: torch.Tensor
    lengthscale: torch.Tensor

    @classmethod
    def from_theta(cls, theta: torch.Tensor) -> Hyperparameters:
        """From raw hyperparameters ``[raw noise, mean, raw output scale, raw lengthscales]``."""
        return cls(
            noise=_softplus(theta[0]) + MIN_NOISE,
            mean=theta[1],
            outputscale=_softplus(theta[2]),
            lengthscale=_softplus(theta[3:]) + MIN_LENGTHSCALE,
        )


def neg_log_marginal(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """GPyTorch's training loss of :class:`ExactGPModel`: ``-(log p(y) + log priors) / n``.

    One Cholesky factorisation; differentiable in ``theta`` (raw hyperparameters).
    """
    n, dim = x.shape
    hp = Hyperparameters.from_theta(theta)
    k = hp.outputscale * matern52(x, x, hp.lengthscale)
    k = k + hp.noise * torch.eye(n, dtype=x.dtype)
    chol = cholesky_with_jitter(k, 1e-8, 3)
    resid = torch.linalg.solve_triangular(chol, (y - hp.mean).unsqueeze(-1), upper=False)
    log_lik = (
        -0.5 * (resid * resid).sum()
        - torch.log(torch.diagonal(chol)).sum()
        - 0.5 * n * math.log(2.0 * math.pi)
    )
    log_prior = (
        _lognormal_log_pdf(hp.noise, *NOISE_PRIOR)
        + _lognormal_log_pdf(
            hp.lengthscale, lengthscale_prior_loc(dim), LENGTHSCALE_PRIOR_SCALE
        ).sum()
    )
    return -(log_lik + log_prior) / n


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def loss_and_gradient(
    theta: np.ndarray, x: torch.Tensor, y: torch.Tensor
) -> tuple[float, np.ndarray]:
    """:func:`neg_log_marginal` and its gradient in closed form (no autograd).

    With ``K = L L^T`` and ``alpha = K^-1 (y - mean)``, the gradient of the loss with
    respect to ``K`` is ``G = (K^-1 - alpha alpha^T) / (2n)``; each hyperparameter's
    gradient is ``sum(G * dK/dtheta)`` (for the lengthscales one matrix product), plus
    its prior's. Autograd through a Cholesky factorisation would cost several times the
    factorisation, and its per-operation overhead dominates at a few hundred points.
    """
    n, dim = x.shape
    raw_noise, mean, raw_scale = float(theta[0]), float(theta[1]), float(theta[2])
    raw_ls = torch.from_numpy(np.asarray(theta[3:], dtype=float))
    noise = math.log1p(math.exp(-abs(raw_noise))) + max(raw_noise, 0.0) + MIN_NOISE
    scale = math.log1p(math.exp(-abs(raw_scale))) + max(raw_scale, 0.0)
    ls = _softplus(raw_ls) + MIN_LENGTHSCALE
    z = x / ls
    d2 = sq_dist(z, z)
    s = torch.sqrt(5.0 * d2)
    e = torch.exp(-s)
    unscaled = (1.0 + s + (5.0 / 3.0) * d2) * e  # Matern 5/2
    k = scale * unscaled
    k.diagonal().add_(noise)
    chol = cholesky_with_jitter(k, 1e-8, 3)
    resid = (y - mean).unsqueeze(-1)
    alpha = torch.cholesky_solve(resid, chol)
    log_ls = torch.log(ls)
    loc = lengthscale_prior_loc(dim)
    log_prior = float(
        _lognormal_log_pdf(torch.tensor(noise, dtype=torch.float64), *NOISE_PRIOR)
        + _lognormal_log_pdf(ls, loc, LENGTHSCALE_PRIOR_SCALE).sum()
    )
    value = (
        0.5 * float((resid * alpha).sum())
        + float(torch.log(torch.diagonal(chol)).sum())
        + 0.5 * n * math.log(2.0 * math.pi)
        - log_prior
    ) / n
    g = torch.cholesky_inverse(chol).sub_(alpha @ alpha.T).mul_(0.5 / n)  # dLoss/dK
    # Derivatives of the log-normal log densities of the priors.
    d_prior_noise = (-1.0 - (math.log(noise) - NOISE_PRIOR[0]) / NOISE_PRIOR[1] ** 2) / noise
    d_prior_ls = (-1.0 - (log_ls - loc) / LENGTHSCALE_PRIOR_SCALE**2) / ls
    grad = np.empty(dim + 3)
    grad[0] = (float(torch.diagonal(g).sum()) - d_prior_noise / n) * _sigmoid(raw_noise)
    grad[1] = -float(alpha.sum()) / n
    grad[2] = float((g * unscaled).sum()) * _sigmoid(raw_scale)
    # dK_ij/dl_k = scale * dMatern/d(d2) * (-2 / l_k) * (z_ik - z_jk)^2, and with the
    # symmetric w = G * scale * dMatern/d(d2): sum_ij w_ij (z_ik - z_jk)^2
    # = 2 sum_i (sum_j w_ij) z_ik^2 - 2 sum_i z_ik (w z)_ik.
    w = g.mul_((-5.0 / 6.0) * scale * (1.0 + s) * e)
    sq_weighted = 2.0 * (w.sum(1) @ (z * z)) - 2.0 * (z * (w @ z)).sum(0)
    d_ls = (-2.0 / ls) * sq_weighted - d_prior_ls / n
    grad[3:] = (d_ls * torch.sigmoid(raw_ls)).numpy()
    return value, grad


@dataclass(frozen=True)
class FittedGP:
    """A GP with fitted hyperparameters and its conditioning data.

    Attributes:
        x: ``(n, d)`` training inputs.
        y: ``(n,)`` standardised training targets.
        theta: Raw hyperparameters (as stored for the next fit's warm start).
    """

    x: torch.Tensor
    y: torch.Tensor
    theta: np.ndarray

    @property
    def hyperparameters(self) -> Hyperparameters:
        return Hyperparameters.from_theta(torch.from_numpy(self.theta))


def fit_gp(
    x: np.ndarray,
    y: np.ndarray,
    warm_start: np.ndarray | None = None,
    *,
    groups: np.ndarray | None = None,
) -> tuple[FittedGP, np.ndarray]:
    """Fit the GP hyperparameters by L-BFGS-B (SciPy) on the exact marginal likelihood.

    The loss is :func:`neg_log_marginal` (GPyTorch's exact marginal log likelihood plus the
    log priors, per data point). Deterministic: the same data and warm start give the same
    model (the sampler keeps no state in memory; it stores the fitted hyperparameters on the
    trial, so a study resumed in another process warm-starts from exactly the same values).

    Args:
        x: ``(n, d)`` inputs.
        y: ``(n,)`` standardised targets.
        warm_start: Raw hyperparameters of an earlier fit (as returned here) to start from,
            if they score better than the default start (then at most 5 iterations
            follow, instead of 150); ``None`` or a vector of the wrong size: the default
            start only.
        groups: ``(d,)`` integer group of each input dimension, ``0 .. G - 1``: the
            lengthscales of a group are tied into one (the fit runs over ``3 + G`` raw
            hyperparameters; each dimension keeps its own lengthscale prior, so a group of
            ``m`` dimensions weighs its prior ``m`` times). ``None``: one lengthscale per
            dimension (ARD).

    Returns:
        The fitted GP and its raw hyperparameters (always ``3 + d`` of them, tied ones
        repeated, so that a warm start and the trust region read them as ARD's).
    """
    tx = torch.as_tensor(x, dtype=torch.float64)
    ty = torch.as_tensor(y, dtype=torch.float64)
    tying = _Tying(x.shape[1], groups)

    memo: dict[bytes, tuple[float, np.ndarray]] = {}

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        # L-BFGS-B starts by evaluating the start, which the warm-start check already did.
        key = np.asarray(theta, dtype=float).tobytes()
        if key not in memo:
            memo[key] = _safe_loss_and_grad(theta)
        value, grad = memo[key]
        return value, grad.copy()

    def _safe_loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        try:
            value, grad = loss_and_gradient(tying.expand(theta), tx, ty)
        except RuntimeError:  # A numerically singular step: tell L-BFGS-B to back off.
            return 1e10, np.zeros_like(theta)
        if not np.isfinite(value) or not np.all(np.isfinite(grad)):
            return 1e10, np.zeros_like(theta)
        return value, tying.reduce_gradient(grad)

    theta0 = tying.tie(default_theta(x.shape[1]))
    maxiter = _FIT_MAXITER
    if warm_start is not None and warm_start.shape == (x.shape[1] + 3,):
        warm = tying.tie(np.asarray(warm_start, dtype=float))
        if loss_and_grad(warm)[0] < loss_and_grad(theta0)[0]:
            theta0 = warm
            maxiter = _FIT_MAXITER_WARM
    result = minimize(
        loss_and_grad,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": maxiter, "ftol": _FIT_FTOL},
    )
    best = result.x if np.isfinite(result.fun) and result.fun < 1e10 else theta0
    best = tying.expand(np.asarray(best, dtype=float))
    return FittedGP(tx, ty, best), best


class _Tying:
    """Maps the fit's raw hyperparameters (one lengthscale per group) to ARD's, and back.

    Without groups every map is the identity.
    """

    def __init__(self, dim: int, groups: np.ndarray | None) -> None:
        self.index: np.ndarray | None = None
        if groups is None:
            return
        index = np.asarray(groups)
        if index.shape != (dim,) or not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"groups must be {dim} integers (one per input dimension).")
        self.n_groups = int(index.max()) + 1 if dim else 0
        if index.min(initial=0) < 0 or len(np.unique(index)) != self.n_groups:
            raise ValueError("groups must number the groups 0, 1, ..., G - 1, each used.")
        self.index = index
        self._sizes = np.bincount(index, minlength=self.n_groups)

    def expand(self, theta: np.ndarray) -> np.ndarray:
        """``(3 + G,)`` -> ``(3 + d,)``: each dimension gets its group's raw lengthscale."""
        if self.index is None:
            return theta
        return np.concatenate([theta[:3], theta[3:][self.index]])

    def tie(self, theta: np.ndarray) -> np.ndarray:
        """``(3 + d,)`` -> ``(3 + G,)``: each group's mean raw lengthscale."""
        if self.index is None:
            return theta
        sums = np.bincount(self.index, weights=theta[3:], minlength=self.n_groups)
        return np.concatenate([theta[:3], sums / self._sizes])

    def reduce_gradient(self, grad: np.ndarray) -> np.ndarray:
        """``(3 + d,)`` -> ``(3 + G,)``: a group's gradient is its dimensions' sum."""
        if self.index is None:
            return grad
        return np.concatenate([grad[:3], np.bincount(self.index, weights=grad[3:])])
