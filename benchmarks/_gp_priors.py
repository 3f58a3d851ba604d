"""Optuna's GPSampler with BOCR's GP priors: an ablation of what BOCR's GP adds.

BOCR's GP (:mod:`optuna_bocr.sampler._gp`) puts the dimension-scaled log-normal prior of
Hvarfner et al. on the lengthscales and a log-normal ``(-4, 1)`` prior on the noise
variance, and none on the output scale. Optuna's GPSampler puts a heuristic prior on the
inverse squared lengthscales (``-(0.1 / x + 0.1 x)``, largest near lengthscale 1 in every
dimension), ``Gamma(2, 1)`` on the kernel scale and ``Gamma(1.1, 30)`` on the noise. Swapping
BOCR's priors into GPSampler, and changing nothing else, measures how much of the gap
between BOCR's GP and GPSampler the priors explain.
"""

from __future__ import annotations

from typing import Any

import optuna
import torch

from optuna_bocr.sampler._gp import _lognormal_log_pdf
from optuna_bocr.sampler._gp import lengthscale_prior_loc
from optuna_bocr.sampler._gp import LENGTHSCALE_PRIOR_SCALE
from optuna_bocr.sampler._gp import NOISE_PRIOR


def bocr_log_prior(gpr: Any) -> torch.Tensor:
    """Log density of BOCR's priors at the hyperparameters of Optuna's ``GPRegressor``."""
    inverse_squared = gpr.inverse_squared_lengthscales
    lengthscales = inverse_squared.rsqrt()
    loc = lengthscale_prior_loc(int(inverse_squared.numel()))
    return _lognormal_log_pdf(
        lengthscales, loc, LENGTHSCALE_PRIOR_SCALE
    ).sum() + _lognormal_log_pdf(gpr.noise_var, *NOISE_PRIOR)


def gp_sampler_with_bocr_priors(*, seed: int) -> optuna.samplers.GPSampler:
    """``GPSampler(seed=seed)`` whose kernel-parameter fit uses :func:`bocr_log_prior`.

    Raises:
        RuntimeError: This Optuna's GPSampler keeps its prior elsewhere (the attribute is
            private; measured with Optuna 5.0).
    """
    sampler = optuna.samplers.GPSampler(seed=seed)
    if not hasattr(sampler, "_log_prior"):
        raise RuntimeError(
            f"optuna {optuna.__version__}: GPSampler has no _log_prior to replace; "
            "the gp-priors benchmark method was written for optuna 5.0"
        )
    sampler._log_prior = bocr_log_prior
    return sampler
