"""The trial history as BOCR uses it, read from the storage once per trial.

One pass over the study's trials gives everything the proposal of trial ``number`` needs:
the observations (per-parameter values that were evaluated and their values), the
proposals of the other trials, the running trials' proposals, the stage openings and the
latest GP hyperparameters of each stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import math

import numpy as np
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from optuna_bocr.sampler import _storage


@dataclass(frozen=True)
class History:
    """What the trials before (and beside) trial ``number`` tell the sampler.

    Attributes:
        number: The trial being proposed for.
        obs_numbers: Trial numbers of the observations (finished trials before ``number``
            with a finite value and known evaluated params), in trial order.
        obs_params: ``(n_obs, n_params)`` per-parameter values that were evaluated (the
            trials' params, or the objective's actual values with ``observe_actual``).
        obs_values: ``(n_obs,)`` their values, oriented so that larger is better (COMPLETE:
            the value; PRUNED: the last intermediate value).
        obs_complete: ``(n_obs,)`` whether each observation is a COMPLETE trial.
        proposals: Trial number -> stored proposal, of every other trial that has one.
        pending: ``(n_running, n_params)`` proposals of the other RUNNING trials.
        settled: Numbers of the other trials that were finished when read (their proposal
            cannot change any more).
        openings: Stage -> ``(trial number, lower, upper)`` of its lowest-numbered opening
            before ``number``.
        warm_starts: Stage -> GP hyperparameters of the latest trial before ``number`` that
            fitted one in that stage.
    """

    number: int
    obs_numbers: list[int]
    obs_params: np.ndarray
    obs_values: np.ndarray
    obs_complete: np.ndarray
    proposals: dict[int, np.ndarray]
    pending: np.ndarray
    settled: frozenset[int]
    openings: dict[int, tuple[int, np.ndarray, np.ndarray]]
    warm_starts: dict[int, np.ndarray]

    def proposals_except(self, numbers: frozenset[int] | set[int]) -> np.ndarray:
        """``(m, n_params)`` stored proposals of the other trials not in ``numbers``."""
        rows = [p for n, p in self.proposals.items() if n not in numbers]
        n_params = self.obs_params.shape[1]
        return np.asarray(rows).reshape(-1, n_params)


def _observed_value(trial: FrozenTrial) -> float | None:
    if trial.state == TrialState.COMPLETE and trial.values is not None:
        value = trial.values[0]
    elif trial.state == TrialState.PRUNED and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    else:
        return None
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def read_history(
    trials: Sequence[FrozenTrial],
    names: Sequence[str],
    number: int,
    sign: float,
    *,
    observe_actual: bool = False,
) -> History:
    """Build the :class:`History` of trial ``number`` from the study's trials.

    Args:
        trials: Every trial of the study.
        names: Parameter names, ``search_space`` order.
        number: The trial being proposed for.
        sign: ``1.0`` to maximise, ``-1.0`` to minimise.
        observe_actual: Observe the objective's actual values
            (:data:`~optuna_bocr.keys.ACTUAL_PARAMS_KEY`) instead of the trials' params.
    """
    n_params = len(names)
    obs_numbers: list[int] = []
    obs_params: list[np.ndarray] = []
    obs_values: list[float] = []
    obs_complete: list[bool] = []
    proposals: dict[int, np.ndarray] = {}
    pending: list[np.ndarray] = []
    settled: set[int] = set()
    openings: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
    warm: dict[int, tuple[int, np.ndarray]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if t.number == number:
            continue
        proposal = _storage.stored_proposal(t, n_params)
        if proposal is not None:
            proposals[t.number] = proposal
        if t.state.is_finished():
            settled.add(t.number)
        elif t.state == TrialState.RUNNING and proposal is not None:
            pending.append(proposal)
        if t.number > number:
            continue
        value = _observed_value(t)
        if value is not None:
            x = _storage.evaluated_params(t, names, use_actual=observe_actual)
            if x is not None:
                obs_numbers.append(t.number)
                obs_params.append(x)
                obs_values.append(sign * value)
                obs_complete.append(t.state == TrialState.COMPLETE)
        opening = _storage.stage_opening(t)
        if opening is not None and opening[0] not in openings:
            stage, lower, upper = opening
            openings[stage] = (t.number, np.asarray(lower, float), np.asarray(upper, float))
        fit = _storage.gp_fit(t)
        if fit is not None:
            warm[fit[0]] = (t.number, fit[1])
    return History(
        number=number,
        obs_numbers=obs_numbers,
        obs_params=np.asarray(obs_params).reshape(-1, n_params),
        obs_values=np.asarray(obs_values, dtype=float),
        obs_complete=np.asarray(obs_complete, dtype=bool),
        proposals=proposals,
        pending=np.asarray(pending).reshape(-1, n_params),
        settled=frozenset(settled),
        openings=openings,
        warm_starts={stage: theta for stage, (_, theta) in warm.items()},
    )
