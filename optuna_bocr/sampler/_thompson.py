"""Thompson sampling in a trust region's box (TuRBO's acquisition).

Candidates are the box's centre with some coordinates replaced by scrambled Sobol points of
the box (each coordinate with probability ``min(1, 20 / dim)``, at least one per candidate:
TuRBO's perturbation mask, which keeps most candidates near the centre in many dimensions);
one joint draw of the GP's latent function over all of them ranks them.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import qmc
import torch

from optuna_bocr.sampler._posterior import Posterior

MAX_CANDIDATES = 2048
"""At most this many candidates: the draw factorises their covariance."""


def thompson_candidates(
    posterior: Posterior,
    *,
    center: np.ndarray,
    box: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    """Candidates in ``box``, ranked by one joint posterior draw (best first).

    Args:
        posterior: The GP posterior (with the running trials fantasised).
        center: ``(dim,)`` the box's centre (the incumbent), inside ``box``.
        box: ``(lower, upper)``, each ``(dim,)``, inside the unit cube.
        rng: The proposal's random stream (Sobol scrambling, mask and draw).

    Returns:
        ``(n, dim)`` candidates, the best draw first: ``n`` is ``100 * dim`` rounded up to
        a power of 2 (a whole Sobol sequence), at most :data:`MAX_CANDIDATES`.
    """
    lower, upper = box
    dim = len(center)
    m = min(math.ceil(math.log2(100 * dim)), int(math.log2(MAX_CANDIDATES)))
    n = 2**m
    sobol = qmc.Sobol(dim, scramble=True, seed=rng)
    perturbed = lower + (upper - lower) * sobol.random_base2(m)
    mask = rng.random((n, dim)) <= min(1.0, 20.0 / dim)
    mask[np.arange(n), rng.integers(dim, size=n)] = True
    candidates = np.where(mask, perturbed, np.clip(center, lower, upper))
    z = torch.from_numpy(rng.standard_normal(n))
    with torch.no_grad():
        draw = posterior.sample(torch.from_numpy(candidates), z).numpy()
    return candidates[np.argsort(-draw, kind="stable")]
