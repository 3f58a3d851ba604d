"""The GP posterior that the acquisition evaluates: mean, variance and their gradients."""

from __future__ import annotations

import numpy as np
import torch

from optuna_bocr.sampler._gp import cholesky_with_jitter
from optuna_bocr.sampler._gp import FittedGP
from optuna_bocr.sampler._gp import matern52
from optuna_bocr.sampler._gp import sq_dist


class Posterior:
    """Posterior of a :class:`FittedGP` (for acquisition optimisation).

    Takes the fitted hyperparameters once, factorises ``K + noise * I`` once (Cholesky),
    and evaluates the Matern 5/2 posterior in a few tensor operations; ``tests/sampler``
    check that it matches GPyTorch's own prediction.

    Args:
        fitted: The fitted GP (its training data are the conditioning data).
    """

    def __init__(self, fitted: FittedGP) -> None:
        hp = fitted.hyperparameters
        self._lengthscale = hp.lengthscale.detach()
        self._outputscale = float(hp.outputscale.item())
        self._noise = float(hp.noise.item())
        self._mean = float(hp.mean.item())
        with torch.no_grad():
            self._factorise(fitted.x, fitted.y - self._mean)

    def _factorise(self, x: torch.Tensor, y_centred: torch.Tensor) -> None:
        self._x = x
        self._y_centred = y_centred
        k = self.kernel(x, x)
        # Jitter against nearly repeated points (more, x10 per try, until it factorises).
        k.diagonal().add_(self._noise + 1e-8 * self._outputscale)
        self._chol = cholesky_with_jitter(k, 1e-7 * self._outputscale, 7)
        self._alpha = torch.cholesky_solve(y_centred.unsqueeze(-1), self._chol)

    def kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Scaled Matern 5/2 kernel matrix between ``a`` and ``b``."""
        return self._outputscale * matern52(a, b, self._lengthscale)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of the latent function at ``x`` (differentiable)."""
        kxs = self.kernel(x, self._x)
        mean = self._mean + (kxs @ self._alpha).squeeze(-1)
        v = torch.linalg.solve_triangular(self._chol, kxs.transpose(-1, -2), upper=False)
        var = self._outputscale - (v * v).sum(-2)
        return mean, var.clamp_min(1e-12)

    def sample(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """One joint draw of the latent function at the rows of ``x``.

        Args:
            x: ``(m, d)`` points.
            z: ``(m,)`` standard normal numbers (the caller's random stream).

        Returns:
            ``(m,)``: ``mean + L z`` with ``L L^T`` the posterior covariance at ``x``
            (jittered until it factorises).
        """
        kxs = self.kernel(x, self._x)
        mean = self._mean + (kxs @ self._alpha).squeeze(-1)
        v = torch.linalg.solve_triangular(self._chol, kxs.transpose(-1, -2), upper=False)
        cov = self.kernel(x, x) - v.transpose(-1, -2) @ v
        chol = cholesky_with_jitter(cov, 1e-6 * self._outputscale, 7)
        return mean + chol @ z

    def with_gradients(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Posterior mean and variance at ``x`` ``(m, d)`` and their gradients in ``x``.

        In closed form (no autograd): with ``u = x / l`` and ``k_ij = s M(|u_i - U_j|^2)``,
        ``dk_ij/dx_i = 2 s M'(.) (u_i - U_j) / l``; the mean's weights are ``alpha`` and the
        variance's ``-2 K^-1 k(x, X)``.

        Returns:
            ``(mean, var, d mean / dx, d var / dx)``, the gradients ``(m, d)``.
        """
        u = x / self._lengthscale
        big_u = self._x / self._lengthscale
        d2 = sq_dist(u, big_u)
        root = torch.sqrt(5.0 * d2)
        e = torch.exp(-root)
        kxs = self._outputscale * (1.0 + root + (5.0 / 3.0) * d2) * e
        dk = self._outputscale * (-5.0 / 6.0) * (1.0 + root) * e  # dk / d(d2)
        mean = self._mean + (kxs @ self._alpha).squeeze(-1)
        v = torch.linalg.solve_triangular(self._chol, kxs.T, upper=False)
        var = self._outputscale - (v * v).sum(0)
        beta = torch.linalg.solve_triangular(self._chol.T, v, upper=True).T  # K^-1 k, (m, n)

        def grad(weights: torch.Tensor) -> torch.Tensor:
            c = weights * dk
            return 2.0 * (c.sum(1, keepdim=True) * u - c @ big_u) / self._lengthscale

        d_mean = grad(self._alpha.T.expand_as(dk))
        d_var = grad(-2.0 * beta)
        clamped = var < 1e-12
        d_var[clamped] = 0.0
        return mean, var.clamp_min(1e-12), d_mean, d_var

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
