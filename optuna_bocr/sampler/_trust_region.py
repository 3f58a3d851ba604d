"""A trust region for the finer stages: a box around the incumbent that adapts to success.

In the stages after the first, the acquisition is confined to a box around the best
observation, or the one of best GP posterior mean (``BOCRSampler(incumbent=...)``; TuRBO:
Eriksson et al., "Scalable Global Optimization via Local Bayesian Optimization", NeurIPS
2019). The box doubles after a run of new bests and halves after a
run of trials without one; once it is smaller than :data:`MIN_LENGTH` it starts again at
its restart side (its first side unless the sampler was given
``trust_region_restart_length``), around the same centre or, with
``BOCRSampler(restart="elsewhere")``, around the best observation away from it
(:meth:`TrustRegion.replay_elsewhere`). Its side along
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

from optuna_bocr.sampler._arguments import check_number

INIT_LENGTH = 0.8
"""Default side of the box (unit cube of the stage) when a stage opens, and after a restart
(``BOCRSampler(trust_region_length=...)``)."""
MAX_LENGTH = 1.6
"""Largest side: the box never grows beyond this."""
MIN_LENGTH = 0.5**5
"""Below this side the box starts again (at its restart side)."""
SUCCESS_TOLERANCE = 3
"""New bests in a row that double the side."""
FAILURE_PER_VARIABLE = 5
"""Trials without a new best in a row that halve the side: ``max(4, ceil(dim / 5))``."""
RELATIVE_IMPROVEMENT = 0.0
"""A value is a new best when it beats the best by more than this fraction of ``|best|``:
any gain, by default (``BOCRSampler(trust_region_improvement=...)``)."""
EARLIER_IMPROVEMENT = 1e-3
"""The default until 2026-12-05 (0.1%: one image of a 1000-image validation split at 90%
top-1); the benchmark's rows made before then replay with it."""


def check_length(value: object, name: str = "trust_region_length") -> float:
    """``value`` as a side of the box, or an error saying what is allowed.

    Args:
        value: The side given.
        name: The argument's name, for the message.

    Raises:
        TypeError: ``value`` is not a number.
        ValueError: ``value`` is outside ``[MIN_LENGTH, MAX_LENGTH]``.
    """
    return check_number(
        name,
        value,
        ok=lambda v: MIN_LENGTH <= v <= MAX_LENGTH,
        allowed=f"a number in [{MIN_LENGTH}, {MAX_LENGTH}] (the side of the box in the "
        "stage's unit cube)",
    )


def check_improvement(value: object) -> float:
    """``value`` as the relative improvement that counts as a new best, or an error.

    Raises:
        TypeError: ``value`` is not a number.
        ValueError: ``value`` is negative or not finite.
    """
    return check_number(
        "trust_region_improvement",
        value,
        ok=lambda v: math.isfinite(v) and v >= 0.0,
        allowed="a finite number >= 0 (a fraction of the best value's magnitude, e.g. 1e-3)",
    )


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
        center: With restarts elsewhere (:meth:`replay_elsewhere`), the index of the
            observation the box centres on and log-EI must beat; ``None``: the best
            observation (:meth:`replay`).
    """

    length: float
    restarts: int
    center: int | None = None

    @classmethod
    def replay(
        cls,
        best_before: float,
        values: ArrayLike,
        dim: int,
        *,
        init_length: float = INIT_LENGTH,
        improvement: float = RELATIVE_IMPROVEMENT,
        restart_length: float | None = None,
    ) -> TrustRegion:
        """The state after the stage's observations, in trial order; restarts stay put.

        Args:
            best_before: Best (oriented, larger is better) value observed before the stage
                opened; ``-inf`` if none.
            values: Oriented values of the stage's observations, in trial-number order.
            dim: Number of variables of the stage.
            init_length: Side when the stage opens (the sampler's is :data:`INIT_LENGTH`;
                other values replay studies run with another).
            improvement: A value is a new best when it beats the best by more than this
                fraction of ``|best|``.
            restart_length: Side after a restart; ``None``: ``init_length``.
        """
        stage = np.asarray(values, dtype=float)
        before = np.array([best_before] if math.isfinite(best_before) else [])
        length, restarts, _ = _replay(
            np.concatenate([before, stage]),
            len(before),
            dim,
            init_length,
            points=None,
            improvement=improvement,
            restart_length=restart_length,
        )
        return cls(length, restarts)

    @classmethod
    def replay_elsewhere(
        cls,
        values: ArrayLike,
        points: ArrayLike,
        start: int,
        dim: int,
        *,
        init_length: float = INIT_LENGTH,
        improvement: float = RELATIVE_IMPROVEMENT,
        restart_length: float | None = None,
    ) -> TrustRegion:
        """The state after the stage's observations, each restart centred elsewhere.

        The box centres on the best observation of its own run: the best one before the
        stage when the stage opens; after a restart, the best observation (of all so far)
        outside the box of the first side around the centre it leaves
        (:func:`restart_center`). New bests are counted against that run's best, as in
        TuRBO's local trust regions, so a run around a worse point can grow its box.

        Args:
            values: ``(n,)`` oriented values of every observation, in trial-number order.
            points: ``(n, dim)`` the observations in the stage's unit cube.
            start: Index of the stage's first observation in ``values``.
            dim: Number of variables of the stage.
            init_length: Side when the stage opens; it also sets what counts as away.
            improvement: As in :meth:`replay`.
            restart_length: As in :meth:`replay`.
        """
        length, restarts, center = _replay(
            np.asarray(values, dtype=float),
            start,
            dim,
            init_length,
            points=np.asarray(points, dtype=float).reshape(-1, dim),
            improvement=improvement,
            restart_length=restart_length,
        )
        return cls(length, restarts, center)

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


def restart_center(values: np.ndarray, points: np.ndarray, leaving: int, radius: float) -> int:
    """Where a restarted box centres: the best observation away from the one it leaves.

    Args:
        values: ``(n,)`` oriented values of the observations so far.
        points: ``(n, dim)`` their points in the stage's unit cube.
        leaving: Index of the centre of the run that ended.
        radius: Half the first side: an observation counts as away when one of its
            coordinates differs from the centre's by more than this.

    Returns:
        The index of the best observation away (the earliest of equal ones); ``leaving``
        if there is none.
    """
    away = np.max(np.abs(points - points[leaving]), axis=1) > radius
    if not away.any():
        return leaving
    return int(np.argmax(np.where(away, values, -np.inf)))


def _replay(
    values: np.ndarray,
    start: int,
    dim: int,
    init_length: float,
    *,
    points: np.ndarray | None,
    improvement: float,
    restart_length: float | None,
) -> tuple[float, int, int | None]:
    """``(length, restarts, centre)`` after ``values[start:]``; see :class:`TrustRegion`.

    Without ``points`` the centre is the best observation and restarts keep it.
    """
    length, restarts = init_length, 0
    center = int(np.argmax(values[:start])) if start > 0 else None
    best = values[center] if center is not None else -math.inf
    successes = failures = 0
    fail_tol = failure_tolerance(dim)
    for i in range(start, len(values)):
        v = float(values[i])
        if not math.isfinite(best) or v > best + improvement * abs(best):
            successes, failures = successes + 1, 0
        else:
            successes, failures = 0, failures + 1
        if center is None or v > best:
            best, center = v, i
        if successes >= SUCCESS_TOLERANCE:
            length, successes = min(2.0 * length, MAX_LENGTH), 0
        elif failures >= fail_tol:
            length, failures = length / 2.0, 0
            if length < MIN_LENGTH:
                length = init_length if restart_length is None else restart_length
                restarts += 1
                if points is not None:
                    center = restart_center(
                        values[: i + 1], points[: i + 1], center, 0.5 * init_length
                    )
                    best = float(values[center])
    return length, restarts, center if points is not None else None
