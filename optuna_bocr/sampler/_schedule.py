"""BOCR's stages: when the search moves to a finer clustering, and the bounds it gets.

Stage 0 searches ``n_clusters`` variables; each following stage re-cuts the same Ward
tree into more clusters (the bridges), and the last one has one variable per parameter.
A stage change (rollback) happens at a fixed trial number, or earlier on stagnation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import math
from typing import Literal

import numpy as np

from optuna_bocr.sampler._arguments import check_number

ROLLBACK_MARGIN = 0.05
"""Margin added on each side of the top-k range, as a fraction of the user's range."""
AUTO_PATIENCE_MIN = 6
"""``patience="auto"``: a stage ends after at least this many observations without a new best."""
AUTO_PATIENCE_PER_VARIABLE = 2
"""``patience="auto"``: ... or this many per search variable of the stage, if more."""
PATIENCE_GAIN = 0.05
"""For stagnation, a value is a new best when it beats the last new best by more than this
fraction of that best's lead over the median of the values observed before it (5%: gains
that small keep no coarse stage alive; any gain counted until 2026-12-06)."""
PAPER_SCHEDULE: dict[str, object] = {
    "rollback_at": (100, 150),
    "patience": 20,
    "patience_from": (80, 130),
    "patience_gain": 0.0,
    "narrow_on_rollback": True,
    "trust_region": False,
    "n_startup_trials": 10,
}
"""The original BOCR schedule for 200 evaluations, as :class:`~optuna_bocr.BOCRSampler`
keyword arguments: 10 Sobol trials; rollback at trial 100 (and 150 with a bridge stage) at the
latest, or from trial 80 (and 130) on after 20 trials without a new best (any gain a new
best); each new stage is
narrowed to the range of the top-k trials, and searched in the whole of it (no trust
region)."""


@dataclass(frozen=True)
class Schedule:
    """When each stage change happens.

    Attributes:
        sizes: Number of search variables of each stage (strictly increasing).
        rollback_at: For change ``i`` (from stage ``i`` to ``i + 1``), the trial number of
            the first trial of the new stage at the latest.
        patience: For change ``i``, the number of observations without a new best (counted
            from the later of the last new best and the start of stage ``i``) that ends
            stage ``i`` early; ``None`` disables stagnation.
        patience_from: For change ``i``, the first trial number at which stagnation may
            end stage ``i``; ``None``: any trial number.
        patience_gain: What counts as a new best for stagnation (:data:`PATIENCE_GAIN`).
    """

    sizes: tuple[int, ...]
    rollback_at: tuple[int, ...]
    patience: tuple[int, ...] | None
    patience_from: tuple[int, ...] | None
    patience_gain: float = PATIENCE_GAIN

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
    patience: int | Literal["auto"] | None,
    patience_from: Sequence[int] | None,
    patience_gain: float = PATIENCE_GAIN,
) -> Schedule:
    """Validate the stage arguments of :class:`~optuna_bocr.BOCRSampler` into a schedule.

    ``patience="auto"`` gives each stage its own patience: ``max(AUTO_PATIENCE_MIN,
    AUTO_PATIENCE_PER_VARIABLE * k)`` observations for a stage of ``k`` variables. Like an
    int patience (the original BOCR's), it counts every trial, those of the Sobol design
    too.
    """
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
    per_change: tuple[int, ...] | None
    if patience is None:
        per_change = None
    elif isinstance(patience, str):
        if patience != "auto":
            raise ValueError(f"patience must be an int >= 1, 'auto' or None, got {patience!r}.")
        per_change = tuple(
            max(AUTO_PATIENCE_MIN, AUTO_PATIENCE_PER_VARIABLE * k) for k in sizes[:-1]
        )
    elif isinstance(patience, bool) or not isinstance(patience, (int, np.integer)):
        raise TypeError(f"patience must be an int, 'auto' or None, got {patience!r}.")
    elif patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}.")
    else:
        per_change = (int(patience),) * n_changes
    gain = check_number(
        "patience_gain",
        patience_gain,
        ok=lambda v: math.isfinite(v) and v >= 0.0,
        allowed="a finite number >= 0 (a fraction of the best value's lead over the median)",
    )
    pfrom = (
        None if patience_from is None else _int_tuple("patience_from", patience_from, n_changes)
    )
    return Schedule(
        sizes=sizes,
        rollback_at=at,
        patience=per_change,
        patience_from=pfrom,
        patience_gain=gain,
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
    if schedule.patience is None:
        return False
    if schedule.patience_from is not None and trial_number < schedule.patience_from[stage]:
        return False
    ordered = sorted(history)
    since = max(last_new_best(ordered, schedule.patience_gain), stage_start - 1)
    return sum(1 for n, _ in ordered if n > since) >= schedule.patience[stage]


def last_new_best(ordered: Sequence[tuple[int, float]], gain: float) -> int:
    """Trial number of the last new best of ``ordered``, by :data:`PATIENCE_GAIN`'s rule.

    Args:
        ordered: ``(trial number, value)`` of the observations in trial-number order,
            values oriented so that larger is better; at least one.
        gain: A value is a new best when it beats the last new best ``b`` by more than
            ``gain * (b - m)``, ``m`` the median of the values observed before it; 0: any
            gain (then the last new best is the best observation).
    """
    values = np.array([v for _, v in ordered])
    if gain == 0.0:
        return ordered[int(np.argmax(values))][0]
    best, number = values[0], ordered[0][0]
    for i in range(1, len(values)):
        if values[i] > best + gain * (best - float(np.median(values[:i]))):
            best, number = values[i], ordered[i][0]
    return number


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
