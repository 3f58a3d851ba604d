"""BOCR's stages: when the search moves to a finer clustering, and the bounds it gets.

Stage 0 searches ``n_clusters`` variables; each following stage re-cuts the same Ward
tree into more clusters (the bridges), and the last one has one variable per parameter.
A stage change (rollback) happens at a fixed trial number, or earlier on stagnation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ROLLBACK_MARGIN = 0.05
"""Margin added on each side of the top-k range, as a fraction of the user's range."""


@dataclass(frozen=True)
class Schedule:
    """When each stage change happens.

    Attributes:
        sizes: Number of search variables of each stage (strictly increasing).
        rollback_at: For change ``i`` (from stage ``i`` to ``i + 1``), the trial number of
            the first trial of the new stage at the latest.
        patience: Number of observations without a new best (counted from the later of
            the last new best and the start of the current stage) that ends a stage early;
            ``None`` disables stagnation.
        patience_from: For change ``i``, the first trial number at which stagnation may
            end stage ``i``; ``None`` disables stagnation.
    """

    sizes: tuple[int, ...]
    rollback_at: tuple[int, ...]
    patience: int | None
    patience_from: tuple[int, ...] | None

    @property
    def n_stages(self) -> int:
        return len(self.sizes)


def _int_tuple(name: str, values: Sequence[int], needed: int) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of ints, got {type(values).__name__}.")
    out: list[int] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must contain ints, got {v!r}.")
        out.append(int(v))
    if len(out) < needed:
        raise ValueError(
            f"{name} has {len(out)} entries but this schedule has {needed} stage change(s) "
            f"(one per bridge, plus the final rollback to one variable per parameter)."
        )
    out = out[:needed]
    if any(v < 1 for v in out) or any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"{name} must be positive and strictly increasing, got {out}.")
    return tuple(out)


def make_schedule(
    *,
    dims: int,
    n_clusters: int,
    bridge_clusters: int | Sequence[int] | None,
    rollback_at: Sequence[int] | None,
    patience: int | None,
    patience_from: Sequence[int] | None,
) -> Schedule:
    """Validate the stage arguments of :class:`~optuna_bocr.BOCRSampler` into a schedule."""
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)):
        raise TypeError(f"n_clusters must be an int, got {n_clusters!r}.")
    if not 1 <= n_clusters <= dims:
        raise ValueError(
            f"n_clusters must be in [1, {dims}] (the number of parameters), got {n_clusters}."
        )
    if bridge_clusters is None:
        bridges: tuple[int, ...] = ()
    elif isinstance(bridge_clusters, (int, np.integer)) and not isinstance(bridge_clusters, bool):
        bridges = (int(bridge_clusters),)
    elif isinstance(bridge_clusters, Sequence) and not isinstance(bridge_clusters, str):
        bridges = _int_tuple("bridge_clusters", bridge_clusters, len(bridge_clusters))
    else:
        raise TypeError(
            f"bridge_clusters must be an int, a sequence of ints or None, got {bridge_clusters!r}."
        )
    if rollback_at is None:
        if bridges:
            raise ValueError("bridge_clusters needs rollback_at (it has no effect without).")
        return Schedule(
            sizes=(int(n_clusters),), rollback_at=(), patience=None, patience_from=None
        )
    sizes = (int(n_clusters), *bridges, dims)
    if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
        if n_clusters == dims and not bridges:
            # Already one variable per parameter: nothing to roll back to.
            return Schedule(sizes=(dims,), rollback_at=(), patience=None, patience_from=None)
        raise ValueError(
            f"n_clusters < each bridge_clusters < number of parameters must hold strictly "
            f"increasing, got stages {list(sizes)}."
        )
    n_changes = len(sizes) - 1
    at = _int_tuple("rollback_at", rollback_at, n_changes)
    if patience is not None:
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)):
            raise TypeError(f"patience must be an int or None, got {patience!r}.")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}.")
    pfrom = (
        None if patience_from is None else _int_tuple("patience_from", patience_from, n_changes)
    )
    return Schedule(
        sizes=sizes,
        rollback_at=at,
        patience=None if patience is None else int(patience),
        patience_from=pfrom,
    )


def should_advance(
    schedule: Schedule,
    *,
    stage: int,
    stage_start: int,
    trial_number: int,
    history: Sequence[tuple[int, float]],
) -> bool:
    """Whether the trial ``trial_number`` opens stage ``stage + 1``.

    Args:
        schedule: The schedule.
        stage: Current stage (the latest opened before ``trial_number``).
        stage_start: Trial number that opened the current stage (0 for stage 0).
        trial_number: Number of the trial being sampled.
        history: ``(trial number, value)`` of every finished observation with a number
            below ``trial_number``, values oriented so that larger is better.
    """
    if stage + 1 >= schedule.n_stages or not history:
        return False
    if trial_number >= schedule.rollback_at[stage]:
        return True
    if schedule.patience is None or schedule.patience_from is None:
        return False
    if trial_number < schedule.patience_from[stage]:
        return False
    ordered = sorted(history)
    best_number = ordered[int(np.argmax([v for _, v in ordered]))][0]
    since = max(best_number, stage_start - 1)
    return sum(1 for n, _ in ordered if n > since) >= schedule.patience


def rollback_bounds(
    top_values: np.ndarray, lows: np.ndarray, highs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster bounds of a new stage from the cluster values of the top-k trials.

    Args:
        top_values: ``(k, n_clusters)`` cluster values of the top-k trials.
        lows: Per-cluster lowest value allowed by the user's distributions.
        highs: Per-cluster highest value allowed by the user's distributions.

    Returns:
        ``(lower, upper)``: the range of the top-k values widened by
        :data:`ROLLBACK_MARGIN` of the user's range on each side, clipped to ``[lows, highs]``.
    """
    margin = ROLLBACK_MARGIN * (highs - lows)
    lower = np.clip(top_values.min(axis=0) - margin, lows, highs)
    upper = np.clip(top_values.max(axis=0) + margin, lows, highs)
    return lower, upper
