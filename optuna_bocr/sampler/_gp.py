"""The surrogate: a GPyTorch exact GP on the unit cube, fitted by L-BFGS-B on the exact MLL.

Matern 5/2 kernel with one lengthscale per dimension (ARD) and an output scale, a constant
mean, and a learned Gaussian noise. Targets are standardised by the caller. The lengthscale
prior is the dimension-scaled log-normal of Hvarfner et al. ("Vanilla Bayesian Optimization
Performs Great in High Dimensions", ICML 2024): ``LogNormal(sqrt(2) + log(d) / 2, sqrt(3))``,
so that the prior expects smoother functions as the dimension grows.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.optimize import minimize
import torch

with warnings.catch_warnings():
    # gpytorch (through linear_operator) calls the deprecated torch.jit.script at import
    # time; the warning is about gpytorch's code, not the user's, so keep it off their screen.
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    import gpytorch
    from gpytorch.utils.warnings import NumericalWarning

_SQRT2 = math.sqrt(2.0)
_SQRT3 = math.sqrt(3.0)
_MIN_NOISE = 1e-6
_FIT_MAXITER = 150
# A fit warm-started from the previous trial's hyperparameters runs at most this many
# iterations: the optimisation is amortised over the trials (each one continues from where
# the last stopped). In the per-parameter stage (tens of lengthscales) an unbounded warm fit
# often runs to the full 150 iterations, mostly drifting the lengthscales of irrelevant
# dimensions, and costs more than the rest of the trial together.
_FIT_MAXITER_WARM = 20
# Relative loss tolerance of the hyperparameter fit: a fit warm-started from the previous
# trial stops after a few steps (SciPy's default, 2.2e-9, costs 2-5x more, same BO result
# on the test problems).
_FIT_FTOL = 1e-6


class ExactGPModel(gpytorch.models.ExactGP):
    """Exact GP with a constant mean and a scaled Matern 5/2 ARD kernel.

    Args:
        x: ``(n, d)`` training inputs (float64), in the unit cube.
        y: ``(n,)`` standardised training targets (float64).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        dim = x.shape[-1]
        likelihood = gpytorch.likelihoods.GaussianLikelihood(
            noise_prior=gpytorch.priors.LogNormalPrior(-4.0, 1.0),
            noise_constraint=gpytorch.constraints.GreaterThan(_MIN_NOISE),
        )
        super().__init__(x, y, likelihood)
        loc = _SQRT2 + 0.5 * math.log(dim)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.MaternKernel(
                nu=2.5,
                ard_num_dims=dim,
                lengthscale_prior=gpytorch.priors.LogNormalPrior(loc, _SQRT3),
                lengthscale_constraint=gpytorch.constraints.GreaterThan(2.5e-2),
            )
        )
        self.double()
        # Deterministic start: the prior's mode for the lengthscales, unit output scale.
        self.covar_module.base_kernel.lengthscale = math.exp(loc - _SQRT3**2)
        self.covar_module.outputscale = 1.0
        self.likelihood.noise = math.exp(-4.0)

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def fit_gp(
    x: np.ndarray, y: np.ndarray, warm_start: np.ndarray | None = None
) -> tuple[ExactGPModel, np.ndarray]:
    """Fit the GP hyperparameters by L-BFGS-B (SciPy) on the exact marginal likelihood.

    The loss is GPyTorch's exact marginal log likelihood plus the log priors. Deterministic:
    the same data and warm start give the same model (the sampler keeps no state in memory;
    it stores the fitted hyperparameters on the trial, so a study resumed in another process
    warm-starts from exactly the same values).

    Args:
        x: ``(n, d)`` inputs.
        y: ``(n,)`` standardised targets.
        warm_start: Raw hyperparameters of an earlier fit (as returned here) to start from,
            if they score better than the default start (then at most 20 iterations
            follow, instead of 150); ``None`` or a vector of the wrong size: the default
            start only.

    Returns:
        The fitted model, in eval mode, and its raw hyperparameters.
    """
    tx = torch.as_tensor(x, dtype=torch.float64)
    ty = torch.as_tensor(y, dtype=torch.float64)
    model = ExactGPModel(tx, ty)
    model.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    params = [p for p in model.parameters() if p.requires_grad]
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def assign(theta: np.ndarray) -> None:
        with torch.no_grad():
            offset = 0
            for p, shape, size in zip(params, shapes, sizes, strict=True):
                p.copy_(torch.from_numpy(theta[offset : offset + size]).reshape(shape))
                offset += size

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        assign(theta)
        for p in params:
            p.grad = None
        try:
            # Jitter added to a nearly singular matrix is expected during the fit; hide it.
            with gpytorch.settings.cholesky_jitter(1e-8), warnings.catch_warnings():
                warnings.simplefilter("ignore", NumericalWarning)
                loss = -mll(model(tx), ty)
                loss.backward()
        except Exception:  # A numerically singular step: tell L-BFGS-B to back off.
            return 1e10, np.zeros_like(theta)
        grad = np.concatenate([p.grad.reshape(-1).numpy() for p in params])
        value = float(loss.item())
        if not np.isfinite(value) or not np.all(np.isfinite(grad)):
            return 1e10, np.zeros_like(theta)
        return value, grad

    theta0 = np.concatenate([p.detach().reshape(-1).numpy() for p in params]).copy()
    maxiter = _FIT_MAXITER
    if warm_start is not None and warm_start.shape == theta0.shape:
        if loss_and_grad(warm_start)[0] < loss_and_grad(theta0)[0]:
            theta0 = np.array(warm_start, dtype=float)
            maxiter = _FIT_MAXITER_WARM
    result = minimize(
        loss_and_grad,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": maxiter, "ftol": _FIT_FTOL},
    )
    best = result.x if np.isfinite(result.fun) and result.fun < 1e10 else theta0
    assign(best)
    model.eval()
    return model, np.asarray(best, dtype=float)


class Posterior:
    """Fast posterior of a fitted :class:`ExactGPModel` (for acquisition optimisation).

    GPyTorch's prediction path costs milliseconds of overhead per call; the acquisition
    optimiser makes hundreds of calls per trial. This class takes the fitted
    hyperparameters once, factorises ``K + noise * I`` once (Cholesky), and evaluates the
    same Matern 5/2 posterior in a few tensor operations. ``tests/test_sampler.py`` checks
    that it matches GPyTorch's own prediction.

    Args:
        model: The fitted model (its training data are the conditioning data).
        x_extra: Extra inputs to condition on (fantasies), ``(m, d)``.
        y_extra: Their targets, ``(m,)``.
    """

    def __init__(
        self,
        model: ExactGPModel,
        x_extra: torch.Tensor | None = None,
        y_extra: torch.Tensor | None = None,
    ) -> None:
        with torch.no_grad():
            self._lengthscale = model.covar_module.base_kernel.lengthscale.detach().reshape(-1)
            self._outputscale = float(model.covar_module.outputscale.item())
            self._noise = float(model.likelihood.noise.item())
            self._mean = float(model.mean_module.constant.item())
            x = model.train_inputs[0].detach()
            y = model.train_targets.detach()
            if x_extra is not None and y_extra is not None:
                x = torch.cat([x, x_extra])
                y = torch.cat([y, y_extra])
            self._factorise(x, y - self._mean)

    def _factorise(self, x: torch.Tensor, y_centred: torch.Tensor) -> None:
        self._x = x
        self._y_centred = y_centred
        k = self.kernel(x, x) + self._noise * torch.eye(len(x), dtype=x.dtype)
        jitter = 1e-8 * self._outputscale
        for _ in range(8):  # Nearly repeated points: add jitter until it factorises.
            chol, info = torch.linalg.cholesky_ex(k + jitter * torch.eye(len(x), dtype=x.dtype))
            if int(info) == 0:
                break
            jitter *= 10.0
        else:
            raise RuntimeError("The GP kernel matrix is not positive definite.")
        self._chol = chol
        self._alpha = torch.cholesky_solve(y_centred.unsqueeze(-1), self._chol)

    def kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Scaled Matern 5/2 kernel matrix between ``a`` and ``b``."""
        diff = (a.unsqueeze(-2) - b.unsqueeze(-3)) / self._lengthscale
        r = torch.sqrt((diff * diff).sum(-1).clamp_min(1e-30))
        sr = math.sqrt(5.0) * r
        return self._outputscale * (1.0 + sr + sr * sr / 3.0) * torch.exp(-sr)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of the latent function at ``x`` (differentiable)."""
        kxs = self.kernel(x, self._x)
        mean = self._mean + (kxs @ self._alpha).squeeze(-1)
        v = torch.linalg.solve_triangular(self._chol, kxs.transpose(-1, -2), upper=False)
        var = self._outputscale - (v * v).sum(-2)
        return mean, var.clamp_min(1e-12)

    def with_fantasies(self, x_pending: np.ndarray) -> tuple[Posterior, np.ndarray]:
        """Condition on ``x_pending`` at the posterior mean ("kriging believer").

        The hyperparameters are kept; afterwards the posterior variance at the pending
        points is about the noise level, so the acquisition no longer favours them.

        Returns:
            The new posterior and the fantasised values (the caller counts them in the
            incumbent, as kriging believer treats them as observations).
        """
        if len(x_pending) == 0:
            return self, np.zeros(0)
        tp = torch.as_tensor(x_pending, dtype=torch.float64)
        with torch.no_grad():
            mean, _ = self(tp)
        new = object.__new__(Posterior)
        new.__dict__.update(self.__dict__)
        with torch.no_grad():
            new._factorise(
                torch.cat([self._x, tp]), torch.cat([self._y_centred, mean - self._mean])
            )
        return new, mean.numpy()
