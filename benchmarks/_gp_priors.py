"""Optuna's GPSampler with BOCR's GP priors: an ablation of what BOCR's GP adds.

BOCR's GP (:mod:`optuna_bocr.sampler._gp`) puts the dimension-scaled log-normal prior of
Hvarfner et al. on the lengthscales and a log-normal ``(-4, 1)`` prior on the noise
variance, and none on the output scale. Optuna's GPSampler puts a heuristic prior on the
inverse squared lengthscales (``-(0.1 / x + 0.1 x)``, largest near lengthscale 1 in every
dimension), ``Gamma(2, 1)`` on the kernel scale and ``Gamma(1.1, 30)`` on the noise. Swapping
BOCR's priors into GPSampler, and changing nothing else, measures how much of the gap
between BOCR's GP and GPSampler the priors explain. :class:`SobolStart` in front of it also
gives GPSampler BOCR's start-up design (a scrambled Sobol design instead of random points),
which measures what that design adds on top, and :func:`use_bocr_acquisition_optimizer`
gives it BOCR's way of maximising log-EI, so that what still differs from BOCR's GP is the
GP as fitted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import FloatDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial
from optuna.trial import TrialState
from scipy.optimize import minimize
from scipy.stats import qmc
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


class SobolStart(BaseSampler):
    """Trials ``0 .. n_startup_trials - 1`` from a scrambled Sobol design, then ``sampler``.

    The design is BOCR's (:func:`scipy.stats.qmc.Sobol`, scrambled, seeded) in the unit cube
    of ``search_space``, mapped linearly to each parameter's range; BOCR draws it in its first
    stage's cluster space, one variable per parameter for ``bocr-flat``.

    Args:
        sampler: The sampler of every later trial (and of parameters outside the space).
        search_space: The float parameters the design covers (linear, no step).
        seed: Seed of the scrambling.
        n_startup_trials: Size of the design.
    """

    def __init__(
        self,
        sampler: BaseSampler,
        *,
        search_space: Mapping[str, FloatDistribution],
        seed: int,
        n_startup_trials: int = 10,
    ) -> None:
        self._sampler = sampler
        self._space = dict(search_space)
        m = max(0, int(np.ceil(np.log2(max(n_startup_trials, 1)))))
        self._design = qmc.Sobol(len(self._space), scramble=True, seed=seed).random_base2(m)
        self._n_startup_trials = n_startup_trials

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if trial.number < self._n_startup_trials:
            return dict(self._space)
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if trial.number >= self._n_startup_trials:
            return self._sampler.sample_relative(study, trial, search_space)
        point = self._design[trial.number]
        return {
            name: dist.low + float(u) * (dist.high - dist.low)
            for (name, dist), u in zip(self._space.items(), point, strict=True)
        }

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._sampler.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Any,
    ) -> None:
        self._sampler.after_trial(study, trial, state, values)


def use_bocr_acquisition_optimizer(sampler: optuna.samplers.GPSampler, *, seed: int) -> None:
    """Make ``sampler`` maximise its acquisition function as BOCR does.

    BOCR (:func:`optuna_bocr.sampler._acquisition.optimize_log_ei`) scores 512 scrambled
    Sobol points, then refines the best 10 and the incumbent together with one L-BFGS-B run
    (at most 100 iterations); GPSampler scores 2048 random points and runs 10 local
    searches. This replaces GPSampler's ``_optimize_acqf``, which Optuna 5.0 documents as the
    method to override for another optimiser.

    Raises:
        RuntimeError: This Optuna's GPSampler has no ``_optimize_acqf``.
    """
    if not hasattr(sampler, "_optimize_acqf"):
        raise RuntimeError(
            f"optuna {optuna.__version__}: GPSampler has no _optimize_acqf to replace; "
            "the gp-bocr-acqf benchmark method was written for optuna 5.0"
        )
    rng = np.random.default_rng(seed)

    def optimize(acqf: Any, best_params: np.ndarray | None) -> np.ndarray:
        dim = acqf.search_space.dim
        cand = qmc.Sobol(dim, scramble=True, seed=rng).random(512)
        cand_vals = acqf.eval_acqf_no_grad(cand)
        warm = np.zeros((0, dim)) if best_params is None else np.clip(best_params, 0.0, 1.0)
        starts = np.concatenate([cand[np.argsort(-cand_vals, kind="stable")[:10]], warm])

        def neg(flat: np.ndarray) -> tuple[float, np.ndarray]:
            x = torch.from_numpy(flat.reshape(len(starts), dim)).requires_grad_(True)
            total = acqf.eval_acqf(x).sum()
            total.backward()
            value, grad = total.item(), x.grad.detach().numpy().reshape(-1)  # type: ignore[union-attr]
            if not np.isfinite(value) or not np.all(np.isfinite(grad)):
                return 1e10, np.zeros_like(flat)
            return -value, -grad

        res = minimize(
            neg,
            starts.reshape(-1),
            jac=True,
            method="L-BFGS-B",
            bounds=[(0.0, 1.0)] * starts.size,
            options={"maxiter": 100},
        )
        local = np.clip(res.x.reshape(len(starts), dim), 0.0, 1.0)
        points = np.concatenate([local, cand])
        values = np.concatenate([acqf.eval_acqf_no_grad(local), cand_vals])
        return points[int(np.argmax(values))]

    sampler._optimize_acqf = optimize  # type: ignore[method-assign]
