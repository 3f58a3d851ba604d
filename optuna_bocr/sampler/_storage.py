"""BOCR's storage protocol: every key it reads or writes, and every call into Optuna's internals.

:class:`~optuna_bocr.BOCRSampler` keeps no state in memory between trials; what it needs is
in the study's storage, so that a resumed study or several workers on one study behave as
one process would. Per trial it writes:

- system attr :data:`PROPOSAL_ATTR`: the per-parameter values proposed (before the trial
  gets its params, so other workers see the claim at once);
- system attr :data:`STAGE_OPEN_ATTR`, on the trial that opens a stage: the stage and the
  bounds of its cluster values;
- system attr :data:`GP_ATTR`: the GP hyperparameters fitted for the trial (the next trial
  of the stage warm-starts from them);
- system attr :data:`LAYOUT_ATTR`, on the first trial that finds none: the stages' clusters,
  so that a resumed study is refused if the sampler would cluster differently;
- user attrs :data:`~optuna_bocr.keys.STAGE_KEY`, :data:`~optuna_bocr.keys.N_CLUSTERS_KEY`
  and :data:`~optuna_bocr.keys.CLUSTER_VALUES_KEY` (for people and the dashboard).

It reads the trials' params, values, states and the user attr
:data:`~optuna_bocr.keys.ACTUAL_PARAMS_KEY` written by the objective. Optuna's private API
(``study._storage``, ``study._get_trials``, ``trial._trial_id``, ...) is used here only; the
supported Optuna versions are pinned in ``setup.cfg``.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import TYPE_CHECKING

import numpy as np
from optuna.trial import FrozenTrial

from optuna_bocr import keys as _keys

if TYPE_CHECKING:
    from optuna.study import Study

STAGE_OPEN_ATTR = _keys.SYSTEM_ATTR_PREFIX + "stage_open"
"""System attr on the trial that opened a stage: ``{"stage", "lower", "upper"}``."""
PROPOSAL_ATTR = _keys.SYSTEM_ATTR_PREFIX + "proposal"
"""System attr: the per-parameter values proposed for the trial (search_space order)."""
GP_ATTR = _keys.SYSTEM_ATTR_PREFIX + "gp"
"""System attr: ``{"stage", "theta"}``, the GP hyperparameters fitted for the trial.

The next trial of the same stage starts its fit from them (like GPSampler's in-memory
cache, but in the storage, so that resumed and parallel studies behave the same)."""
LAYOUT_ATTR = _keys.SYSTEM_ATTR_PREFIX + "layout"
"""System attr: the parameter names and ranges and each stage's clusters (see
:func:`layout_record`). The one on the lowest-numbered trial is the study's."""
RETRY_OF_ATTR = "failed_trial"
"""System attr that :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` sets on a retry (the
number of the failed trial); the retry inherits the failed trial's system attrs."""


# -- Reads ----------------------------------------------------------------------------------


def read_trials(study: Study) -> list[FrozenTrial]:
    """Every trial of the study, fresh from the storage (not copied: do not modify them)."""
    return study._get_trials(deepcopy=False, use_cache=False)


def check_single_objective(study: Study) -> None:
    """Refuse a study with more than one objective.

    Raises:
        ValueError: The study is multi-objective.
    """
    if study._is_multi_objective():
        raise ValueError(
            "BOCRSampler supports single-objective studies only; this study has "
            f"{len(study.directions)} objectives."
        )


def _vector(values: Any, size: int) -> np.ndarray | None:
    if not isinstance(values, list) or len(values) != size:
        return None
    try:
        out = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return None
    return out if np.all(np.isfinite(out)) else None


def stored_proposal(trial: FrozenTrial, n_params: int) -> np.ndarray | None:
    """The per-parameter values proposed for ``trial``, or ``None`` if it has none."""
    return _vector(trial.system_attrs.get(PROPOSAL_ATTR), n_params)


def evaluated_params(
    trial: FrozenTrial, names: Sequence[str], *, use_actual: bool = True
) -> np.ndarray | None:
    """Per-parameter values that ``trial`` evaluated.

    Per parameter: the objective's actual value (:data:`~optuna_bocr.keys.ACTUAL_PARAMS_KEY`,
    only if ``use_actual``), else the trial's param, else the stored proposal; ``None`` if one has
    none of these or a value is not finite.
    """
    actual = trial.user_attrs.get(_keys.ACTUAL_PARAMS_KEY) if use_actual else None
    if not isinstance(actual, Mapping):
        actual = {}
    elif len(actual) >= len(names):
        # The common case (the objective recorded every parameter): one conversion.
        try:
            fast = np.array([actual[name] for name in names], dtype=float)
        except (KeyError, TypeError, ValueError):
            pass
        else:
            return fast if np.isfinite(fast).all() else None
    params = trial.params
    proposal = trial.system_attrs.get(PROPOSAL_ATTR)
    if not isinstance(proposal, list) or len(proposal) != len(names):
        proposal = None
    out = np.empty(len(names))
    for i, name in enumerate(names):
        if name in actual:
            v = actual[name]
        elif name in params:
            v = params[name]
        elif proposal is not None:
            v = proposal[i]
        else:
            return None
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            return None
    return out if np.all(np.isfinite(out)) else None


def stage_opening(trial: FrozenTrial) -> tuple[int, list[float], list[float]] | None:
    """``(stage, lower, upper)`` if ``trial`` opened a stage, else ``None``."""
    rec = trial.system_attrs.get(STAGE_OPEN_ATTR)
    if not isinstance(rec, Mapping):
        return None
    return int(rec["stage"]), list(rec["lower"]), list(rec["upper"])


def stage_openings(
    trials: Sequence[FrozenTrial],
) -> dict[int, tuple[int, list[float], list[float]]]:
    """Stage -> ``(trial number, lower, upper)`` of its opening, the lowest number winning.

    Stage 0 opens with the study and has no record. ``lower`` and ``upper`` are the bounds
    of each cluster of that stage, as the sampler recorded them.
    """
    out: dict[int, tuple[int, list[float], list[float]]] = {}
    for t in trials:
        try:
            rec = stage_opening(t)
        except (KeyError, TypeError, ValueError):
            continue
        if rec is not None and (rec[0] not in out or t.number < out[rec[0]][0]):
            out[rec[0]] = (t.number, rec[1], rec[2])
    return dict(sorted(out.items()))


def gp_fit(trial: FrozenTrial) -> tuple[int, np.ndarray] | None:
    """``(stage, theta)`` of the GP fitted for ``trial``, or ``None``."""
    rec = trial.system_attrs.get(GP_ATTR)
    if not isinstance(rec, Mapping) or "stage" not in rec:
        return None
    return int(rec["stage"]), np.asarray(rec["theta"], dtype=float)


def stored_layout(trials: Sequence[FrozenTrial]) -> tuple[int, Any] | None:
    """``(trial number, layout)`` of the lowest-numbered trial with a layout, or ``None``."""
    found = [
        (t.number, t.system_attrs[LAYOUT_ATTR]) for t in trials if LAYOUT_ATTR in t.system_attrs
    ]
    return min(found, key=lambda f: f[0]) if found else None


def retried_from(trial: FrozenTrial) -> int | None:
    """Number of the failed trial that ``trial`` retries, or ``None``."""
    number = trial.system_attrs.get(RETRY_OF_ATTR)
    return int(number) if isinstance(number, int) else None


def retried_proposal(trial: FrozenTrial, n_params: int) -> np.ndarray | None:
    """The failed trial's proposal, if ``trial`` is its retry (all of it, never a mix).

    Optuna's :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` copies the failed
    trial's system attrs (its stored proposal among them) and params onto the retry; a
    fresh proposal would give the parameters the failed trial did not reach other values,
    a point that BOCR never proposed.
    """
    if retried_from(trial) is None:
        return None
    return stored_proposal(trial, n_params)


def layout_record(
    names: Sequence[str],
    lows: np.ndarray,
    highs: np.ndarray,
    clusters: Sequence[Sequence[Sequence[int]]],
) -> dict[str, Any]:
    """The JSON record of a sampler's layout: names, ranges and each stage's clusters."""
    return {
        "names": list(names),
        "lows": [float(v) for v in lows],
        "highs": [float(v) for v in highs],
        "clusters": [[[int(i) for i in g] for g in stage] for stage in clusters],
    }


def layout_difference(stored: Any, mine: dict[str, Any]) -> str | None:
    """What differs between a stored layout and ``mine`` (``None``: nothing), in words."""
    if stored == mine:
        return None
    if not isinstance(stored, Mapping):
        return "an unreadable layout record"
    if stored.get("names") != mine["names"]:
        return "other parameter names"
    if [stored.get("lows"), stored.get("highs")] != [mine["lows"], mine["highs"]]:
        return "other parameter ranges"
    sizes = [len(s) for s in stored.get("clusters", [])]
    if sizes != [len(s) for s in mine["clusters"]]:
        return f"stages of {sizes} clusters"
    return f"other clusters (same stage sizes {sizes})"


def check_layout(trials: Sequence[FrozenTrial], mine: dict[str, Any]) -> bool:
    """Whether ``trials`` hold a layout record; raise if it differs from ``mine``.

    Raises:
        ValueError: The study was searched with another layout (one line saying what
            differs and what to do).
    """
    found = stored_layout(trials)
    if found is None:
        return False
    what = layout_difference(found[1], mine)
    if what is None:
        return True
    sizes = [len(s) for s in mine["clusters"]]
    raise ValueError(
        f"This study was searched by a BOCRSampler with {what} (trial {found[0]}); this "
        f"sampler has stages of {sizes} clusters: resume it with the same "
        "n_clusters, bridge_clusters, search space and features, or start a new study."
    )


# -- Writes ---------------------------------------------------------------------------------


def _set_system_attr(study: Study, trial: FrozenTrial, key: str, value: Any) -> None:
    study._storage.set_trial_system_attr(trial._trial_id, key, value)


def write_proposal(study: Study, trial: FrozenTrial, params: np.ndarray) -> None:
    """Store ``params`` as ``trial``'s proposal."""
    _set_system_attr(study, trial, PROPOSAL_ATTR, [float(v) for v in params])


def write_stage_opening(
    study: Study, trial: FrozenTrial, stage: int, lower: np.ndarray, upper: np.ndarray
) -> None:
    """Record that ``trial`` opens ``stage`` with these bounds of its cluster values."""
    record = {"stage": int(stage), "lower": lower.tolist(), "upper": upper.tolist()}
    _set_system_attr(study, trial, STAGE_OPEN_ATTR, record)


def write_gp_fit(study: Study, trial: FrozenTrial, stage: int, theta: np.ndarray) -> None:
    """Store the GP hyperparameters fitted for ``trial`` in ``stage``."""
    _set_system_attr(study, trial, GP_ATTR, {"stage": int(stage), "theta": theta.tolist()})


def write_layout(study: Study, trial: FrozenTrial, layout: dict[str, Any]) -> None:
    """Store the sampler's layout on ``trial``."""
    _set_system_attr(study, trial, LAYOUT_ATTR, layout)


def write_trial_summary(
    study: Study, trial: FrozenTrial, stage: int, n_clusters: int, cluster_values: np.ndarray
) -> None:
    """The user attrs that show a trial's stage and cluster values."""
    storage, trial_id = study._storage, trial._trial_id
    storage.set_trial_user_attr(trial_id, _keys.STAGE_KEY, int(stage))
    storage.set_trial_user_attr(trial_id, _keys.N_CLUSTERS_KEY, int(n_clusters))
    storage.set_trial_user_attr(
        trial_id, _keys.CLUSTER_VALUES_KEY, [float(v) for v in cluster_values]
    )
