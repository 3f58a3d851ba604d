"""Log expected improvement and its optimisation on the unit cube (Sobol + L-BFGS-B)."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize
from scipy.stats import qmc
import torch

from optuna_bocr.sampler._posterior import Posterior

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)
_SQRT_HALF_PI = math.sqrt(0.5 * math.pi)


def standard_log_ei(z: torch.Tensor) -> torch.Tensor:
    """``log(phi(z) + z * Phi(z))``, stable for very negative ``z`` (Ament et al., 2023).

    For ``z > -25`` the direct formula is used; below, ``EI = phi(z) * (1 + z * Phi(z) /
    phi(z))`` with the ratio written through ``erfcx``, which neither underflows nor cancels.
    """
    small = z < -25.0
    z_direct = torch.where(small, torch.zeros_like(z), z)
    direct = (
        0.5 * z_direct * torch.special.erfc(-_SQRT_HALF * z_direct)
        + torch.exp(-0.5 * z_direct * z_direct) / math.sqrt(2.0 * math.pi)
    ).log()
    z_tail = torch.where(small, z, -torch.full_like(z, 30.0))
    tail = (
        -0.5 * z_tail * z_tail
        - _LOG_SQRT_2PI
        + torch.log1p(_SQRT_HALF_PI * z_tail * torch.special.erfcx(-_SQRT_HALF * z_tail))
    )
    return torch.where(small, tail, direct)


def log_ei(mean: torch.Tensor, var: torch.Tensor, best: float) -> torch.Tensor:
    """Log expected improvement over ``best`` (maximisation) of a Gaussian posterior."""
    sigma = var.sqrt()
    return standard_log_ei((mean - best) / sigma) + sigma.log()


def log_ei_with_gradient(
    posterior: Posterior, x: np.ndarray, best: float
) -> tuple[np.ndarray, np.ndarray]:
    """Log-EI at the rows of ``x`` and its gradient in ``x``, in closed form.

    With ``h(z) = log(phi(z) + z Phi(z))``, ``h'(z) = Phi(z) / (phi(z) + z Phi(z))``
    ``= exp(log Phi(z) - h(z))``; ``d/dmean = h'(z) / sigma`` and ``d/dvar =
    (1 - z h'(z)) / (2 var)``.
    """
    with torch.no_grad():
        mean, var, d_mean, d_var = posterior.with_gradients(torch.from_numpy(x))
        sigma = var.sqrt()
        z = (mean - best) / sigma
        h = standard_log_ei(z)
        h_prime = torch.exp(torch.special.log_ndtr(z) - h)
        value = h + sigma.log()
        grad = (h_prime / sigma).unsqueeze(-1) * d_mean + (
            (1.0 - z * h_prime) / (2.0 * var)
        ).unsqueeze(-1) * d_var
    return value.numpy(), grad.numpy()


def optimize_log_ei(
    posterior: Posterior,
    *,
    best: float,
    dim: int,
    rng: np.random.Generator,
    warm_starts: np.ndarray,
    n_candidates: int = 512,
    n_local: int = 10,
    maxiter: int = 100,
    box: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Maximise log-EI on ``[0, 1]^dim``, or on a box inside it.

    ``n_candidates`` scrambled Sobol points (seeded from ``rng``) are scored; L-BFGS-B
    (SciPy, gradients in closed form) then refines the best ``n_local`` of them and each warm
    start (e.g. the best observation) together: the points are independent, so one run on
    their concatenation with the summed objective optimises each of them at the cost of
    one batched posterior evaluation per step.

    Ten starts and 100 iterations (as many local searches as Optuna's GPSampler runs): with
    3 starts and 25 iterations, 2 of 5 runs of a 27-dimensional GP stalled on a synthetic
    pruning task (benchmarks/RECORD.md, "What the GP observes").

    Args:
        box: ``(lower, upper)``, each ``(dim,)``: search only this box of the unit cube (a
            trust region); ``None``: the whole cube.

    Returns:
        ``(points, values)``: every scored and locally optimised point, best first, so the
        caller can skip a point it must not propose (a duplicate).
    """
    lower, upper = (np.zeros(dim), np.ones(dim)) if box is None else box
    sobol = qmc.Sobol(dim, scramble=True, seed=rng)
    cand = lower + (upper - lower) * sobol.random(n_candidates)
    with torch.no_grad():
        mean, var = posterior(torch.from_numpy(cand))
        cand_vals = log_ei(mean, var, best).numpy()
    order = np.argsort(-cand_vals, kind="stable")
    starts = np.concatenate([cand[order[:n_local]], np.clip(warm_starts, lower, upper)])
    n_starts = len(starts)

    def neg(flat: np.ndarray) -> tuple[float, np.ndarray]:
        values, grads = log_ei_with_gradient(posterior, flat.reshape(n_starts, dim), best)
        v = float(values.sum())
        g = -grads.reshape(-1)
        if not np.isfinite(v) or not np.all(np.isfinite(g)):
            return 1e10, np.zeros_like(flat)
        return -v, g

    res = minimize(
        neg,
        starts.reshape(-1),
        jac=True,
        method="L-BFGS-B",
        bounds=list(zip(np.tile(lower, n_starts), np.tile(upper, n_starts), strict=True)),
        options={"maxiter": maxiter},
    )
    local = np.clip(res.x.reshape(n_starts, dim), lower, upper)
    with torch.no_grad():
        mean, var = posterior(torch.from_numpy(local))
        local_vals = log_ei(mean, var, best).numpy()
    points = np.concatenate([local, cand])
    values = np.concatenate([local_vals, cand_vals])
    best_first = np.argsort(-values, kind="stable")
    return points[best_first], values[best_first]
