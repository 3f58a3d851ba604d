"""A trust region for the finer stages: a box around the incumbent that adapts to success.

In the stages after the first, the acquisition is confined to a box around the best
observation, or the one of best GP posterior mean (``BOCRSampler(incumbent=...)``; TuRBO:
Eriksson et al., "Scalable Global Optimization via Local Bayesian Optimization", NeurIPS
2019). The box doubles after a run of new bests and halves after a
run of trials without one; once it is smaller than :data:`MIN_LENGTH` it starts again at
its first side (:data:`INIT_LENGTH` unless the sampler was given another). Its side along
each variable is proportional to the GP's lengthscale of that variable (divided by their
geometric mean), so the box is long where the function changes slowly.

The length is not stored: it is replayed from the stage's observations in trial order, so
every process that reads the same history gets the same box (the sampler keeps its state
in the storage only).
"""

from __future__ import annotations

from dataclasses import dataclass
import math

import numpy as np
from numpy.typing import ArrayLike

INIT_LENGTH = 0.8
"""Default side of the box (unit cube of the stage) when a stage opens, and after a restart
(``BOCRSampler(trust_region_length=...)``)."""
MAX_LENGTH = 1.6
"""Largest side: the box never grows beyond this."""
MIN_LENGTH = 0.5**5
"""Below this side the box starts again at :data:`INIT_LENGTH`."""
SUCCESS_TOLERANCE = 3
"""New bests in a row that double the side."""
FAILURE_PER_VARIABLE = 5
"""Trials without a new best in a row that halve the side: ``max(4, ceil(dim / 5))``."""
RELATIVE_IMPROVEMENT = 1e-3
"""A value is a new best when it beats the best by more than this fraction of ``|best|``."""


def check_length(value: object) -> float:
    """``value`` as a first side of the box, or an error saying what is allowed.

    Raises:
        TypeError: ``value`` is not a number.
        ValueError: ``value`` is outside ``[MIN_LENGTH, MAX_LENGTH]``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"trust_region_length must be a number, got {value!r}.")
    if not MIN_LENGTH <= value <= MAX_LENGTH:
        raise ValueError(
            f"trust_region_length must be a number in [{MIN_LENGTH}, {MAX_LENGTH}] (the side "
            f"of the box in the stage's unit cube), got {value!r}."
        )
    return float(value)


def failure_tolerance(dim: int) -> int:
    """Trials without a new best in a row that halve the box of a ``dim``-variable stage.

    TuRBO waits ``max(4, dim)`` trials; a per-layer stage of BOCR gets a few tens of trials
    in all, so the box would never shrink in it. A fifth of the dimension (at least 4) lets a
    27-variable stage halve its box every 6 trials without a new best.
    """
    return max(4, math.ceil(dim / FAILURE_PER_VARIABLE))


@dataclass(frozen=True)
class TrustRegion:
    """The replayed state of a stage's trust region.

    Attributes:
        length: Side of the box, before the per-variable lengthscale weighting.
        restarts: How many times the box fell below :data:`MIN_LENGTH` and started again.
    """

    length: float
    restarts: int

    @classmethod
    def replay(
        cls,
        best_before: float,
        values: ArrayLike,
        dim: int,
        *,
        init_length: float = INIT_LENGTH,
    ) -> TrustRegion:
        """The state after the stage's observations, in trial order.

        Args:
            best_before: Best (oriented, larger is better) value observed before the stage
                opened; ``-inf`` if none.
            values: Oriented values of the stage's observations, in trial-number order.
            dim: Number of variables of the stage.
            init_length: Side when the stage opens and after a restart (the sampler's is
                :data:`INIT_LENGTH`; other values replay studies run with another).
        """
        length, restarts = init_length, 0
        best = best_before
        successes = failures = 0
        fail_tol = failure_tolerance(dim)
        for v in np.asarray(values, dtype=float).tolist():
            if not math.isfinite(best) or v > best + RELATIVE_IMPROVEMENT * abs(best):
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
            best = max(best, v)
            if successes >= SUCCESS_TOLERANCE:
                length, successes = min(2.0 * length, MAX_LENGTH), 0
            elif failures >= fail_tol:
                length, failures = length / 2.0, 0
                if length < MIN_LENGTH:
                    length, restarts = init_length, restarts + 1
        return cls(length, restarts)

    def box(self, center: np.ndarray, lengthscales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)``: the box around ``center`` inside the unit cube.

        Args:
            center: ``(dim,)`` the incumbent, in the stage's unit cube (clipped to it).
            lengthscales: ``(dim,)`` the GP's lengthscales of the stage's variables.
        """
        ls = np.asarray(lengthscales, dtype=float)
        weights = ls / np.exp(np.mean(np.log(ls)))
        half = 0.5 * self.length * weights
        c = np.clip(center, 0.0, 1.0)
        return np.clip(c - half, 0.0, 1.0), np.clip(c + half, 0.0, 1.0)
