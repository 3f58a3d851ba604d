"""The reference definition of BOCR's GP in GPyTorch (model, priors and constraints).

:mod:`optuna_bocr.sampler._gp` fits and :mod:`optuna_bocr.sampler._posterior` predicts with
the same formulas in plain torch; the tests check both against this model.
"""

from __future__ import annotations

import math
import warnings

import torch

from optuna_bocr.sampler._gp import FittedGP
from optuna_bocr.sampler._gp import lengthscale_prior_loc
from optuna_bocr.sampler._gp import LENGTHSCALE_PRIOR_SCALE
from optuna_bocr.sampler._gp import MIN_LENGTHSCALE
from optuna_bocr.sampler._gp import MIN_NOISE
from optuna_bocr.sampler._gp import NOISE_PRIOR

with warnings.catch_warnings():
    # gpytorch (through linear_operator) calls the deprecated torch.jit.script at import
    # time; the warning is about gpytorch's code, not the user's, so keep it off their screen.
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    import gpytorch


class ExactGPModel(gpytorch.models.ExactGP):
    """Exact GP with a constant mean and a scaled Matern 5/2 ARD kernel.

    Args:
        x: ``(n, d)`` training inputs (float64), in the unit cube.
        y: ``(n,)`` standardised training targets (float64).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        dim = x.shape[-1]
        likelihood = gpytorch.likelihoods.GaussianLikelihood(
            noise_prior=gpytorch.priors.LogNormalPrior(*NOISE_PRIOR),
            noise_constraint=gpytorch.constraints.GreaterThan(MIN_NOISE),
        )
        super().__init__(x, y, likelihood)
        loc = lengthscale_prior_loc(dim)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.MaternKernel(
                nu=2.5,
                ard_num_dims=dim,
                lengthscale_prior=gpytorch.priors.LogNormalPrior(loc, LENGTHSCALE_PRIOR_SCALE),
                lengthscale_constraint=gpytorch.constraints.GreaterThan(MIN_LENGTHSCALE),
            )
        )
        self.double()
        # Deterministic start: the prior's mode for the lengthscales, unit output scale.
        self.covar_module.base_kernel.lengthscale = math.exp(loc - LENGTHSCALE_PRIOR_SCALE**2)
        self.covar_module.outputscale = 1.0
        self.likelihood.noise = math.exp(NOISE_PRIOR[0])

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def gpytorch_model(fitted: FittedGP) -> ExactGPModel:
    """The :class:`ExactGPModel` with ``fitted``'s data and hyperparameters (eval mode)."""
    model = ExactGPModel(fitted.x, fitted.y)
    params = list(model.parameters())
    offset = 0
    with torch.no_grad():
        for p in params:
            size = p.numel()
            p.copy_(torch.from_numpy(fitted.theta[offset : offset + size]).reshape(p.shape))
            offset += size
    model.eval()
    return model
