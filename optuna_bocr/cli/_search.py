"""The search side of ``prune``: the sampler, the pruner, and what a resumed study must match."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from optuna_bocr.cli._common import CLIError
from optuna_bocr.cli._common import DEFAULT_LENGTHSCALES
from optuna_bocr.cli._common import DEFAULT_OUTCOME_TRANSFORM
from optuna_bocr.cli._common import DEFAULT_PATIENCE_GAIN
from optuna_bocr.cli._common import DEFAULT_TRUST_REGION
from optuna_bocr.cli._common import first_line
from optuna_bocr.cli._common import STARTUP_TRIALS
from optuna_bocr.cli._common import STUDY_CONFIG_KEYS
from optuna_bocr.cli._common import STUDY_CONFIG_LEGACY
from optuna_bocr.cli._prune import PruneSettings
from optuna_bocr.keys import STUDY_CONFIG_KEY


def study_config(s: PruneSettings) -> dict[str, Any]:
    """The settings a resumed study must have been made with (stored on the study)."""
    return {
        "model": s.data.model,
        "dataset": s.data.dataset,
        "flops_target": s.flops_ratio,
        "budget_rule": s.budget_rule,
        "lbound": s.lbound,
        "rbound": s.rbound,
        "val_size": s.val_size,
        "seed": s.data.seed,
        "image_size": s.data.image_size,
        "model_kwargs": s.data.model_kwargs,
    }


def check_existing_study(study: optuna.study.Study, s: PruneSettings) -> None:
    """Refuse to resume a study of another kind or made with other settings."""
    name, url = study.study_name, s.storage
    if len(study.directions) != 1 or study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise CLIError(
            f"study {name!r} in {url} is not a single-objective maximisation study; "
            "choose another --study-name"
        )
    stored = study.user_attrs.get(STUDY_CONFIG_KEY)
    if stored is None:
        return
    wanted = study_config(s)
    was = {k: stored.get(k, STUDY_CONFIG_LEGACY.get(k)) for k in STUDY_CONFIG_KEYS}
    diffs = [
        f"{k}={was[k]!r} (now {wanted[k]!r})" for k in STUDY_CONFIG_KEYS if was[k] != wanted[k]
    ]
    if diffs:
        raise CLIError(
            f"study {name!r} in {url} was made with {', '.join(diffs)}; "
            "use the same settings to resume, or another --study-name"
        )


def check_param_names(study: optuna.study.Study, names: Sequence[str], url: str) -> None:
    """Refuse a study whose trials searched other parameters than ``names``.

    A trial that did not finish (a worker killed while its parameters were being written)
    may hold only some of them; only a name that is not in ``names`` proves another model.
    """
    expected = set(names)
    for t in study.get_trials(deepcopy=False):
        params = set(t.params)
        finished = t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        if params - expected or (finished and params != expected):
            extra = sorted(params - expected)[:3]
            missing = sorted(expected - params)[:3]
            raise CLIError(
                f"study {study.study_name!r} in {url} searches other parameters than the "
                f"prunable layers of this model (trial {t.number}: unexpected {extra}, "
                f"missing {missing}); choose another --study-name"
            )


def rollback_settings(s: PruneSettings, n_layers: int) -> dict[str, Any]:
    """BOCRSampler's stage arguments for ``n_layers`` layers from the ``prune`` options."""
    n = s.n_trials
    k = min(s.n_clusters, n_layers)
    if s.rollback_at == "none":
        return {"n_clusters": k, "bridge_clusters": None, "rollback_at": None}
    if isinstance(s.bridge_clusters, list):
        bridges: list[int] | None = list(s.bridge_clusters)
    elif s.bridge_clusters == "auto":
        bridges = [3 * k] if 3 * k < n_layers else None
    else:
        bridges = None
    n_changes = 1 + (len(bridges) if bridges else 0)
    if not isinstance(s.rollback_at, list):  # "auto"
        fractions = [0.5 + 0.25 * i / max(1, n_changes - 1) for i in range(n_changes)]
        if n_changes == 2:
            fractions = [0.5, 0.75]
        at: list[int] = []
        for f in fractions:
            at.append(max(round(f * n), (at[-1] + 1) if at else 1))
        patience_from = [max(1, min(a, round(a * 0.8))) for a in at]
        for i in range(1, len(patience_from)):
            patience_from[i] = max(patience_from[i], patience_from[i - 1] + 1)
    else:
        at = list(s.rollback_at)
        if len(at) < n_changes:
            raise CLIError(
                f"--rollback-at needs {n_changes} trial number(s) (one per bridge clustering, "
                f"plus the final rollback), got {len(at)}"
            )
        at = at[:n_changes]
        patience_from = [max(1, round(a * 0.8)) for a in at]
    trust_region = DEFAULT_TRUST_REGION if s.trust_region is None else s.trust_region
    lengthscales = DEFAULT_LENGTHSCALES if s.lengthscales is None else s.lengthscales
    outcome = DEFAULT_OUTCOME_TRANSFORM if s.outcome_transform is None else s.outcome_transform
    gain = DEFAULT_PATIENCE_GAIN if s.patience_gain is None else s.patience_gain
    if s.patience is None:  # BOCRSampler's own rule: patience relative to each stage's size
        return {
            "n_clusters": k,
            "bridge_clusters": bridges,
            "rollback_at": at,
            "patience": "auto",
            "patience_from": None,
            "patience_gain": gain,
            "narrow_on_rollback": s.narrow_on_rollback,
            "observe_actual": s.observe_actual,
            "trust_region": trust_region,
            "lengthscales": lengthscales,
            "outcome_transform": outcome,
        }
    return {
        "n_clusters": k,
        "bridge_clusters": bridges,
        "rollback_at": at,
        "patience": s.patience,
        "patience_from": patience_from,
        "patience_gain": gain,
        "narrow_on_rollback": s.narrow_on_rollback,
        "observe_actual": s.observe_actual,
        "trust_region": trust_region,
        "lengthscales": lengthscales,
        "outcome_transform": outcome,
    }


def make_sampler(s: PruneSettings, objective: Any) -> optuna.samplers.BaseSampler:
    """The sampler that ``--sampler`` names, set up for ``objective``'s layers."""
    seed = s.data.seed
    if s.sampler == "bocr":
        from optuna_bocr import BOCRSampler

        settings = rollback_settings(s, len(objective.search_space))
        if s.n_startup_trials is not None:
            settings["n_startup_trials"] = s.n_startup_trials
        try:
            return BOCRSampler(
                objective.search_space,
                features=objective.layer_features(),
                seed=seed,
                unstructured_fallback=s.unstructured_fallback,
                distance=s.distance,
                evaluation_key=objective.network_key,
                **settings,
            )
        except (ValueError, TypeError) as e:
            raise CLIError(f"invalid BOCR settings: {first_line(e)}") from e
    startup = STARTUP_TRIALS if s.n_startup_trials is None else s.n_startup_trials
    if s.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    if s.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    if s.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def check_sampler_fits(
    sampler: optuna.samplers.BaseSampler, study: optuna.study.Study, s: PruneSettings
) -> None:
    """Refuse to resume a study that ``sampler`` cannot continue (e.g. another cluster
    schedule), when the sampler can tell (``check_study``)."""
    check = getattr(sampler, "check_study", None)
    if check is None:
        return
    try:
        check(study)
    except ValueError as e:
        raise CLIError(
            f"study {study.study_name!r} in {s.storage}: {first_line(e)}; use the settings "
            "it was made with, or another --study-name"
        ) from e


def make_pruner(s: PruneSettings) -> optuna.pruners.BasePruner:
    """The pruner that ``--pruner`` names."""
    if s.pruner == "median":
        warmup = STARTUP_TRIALS if s.n_startup_trials is None else s.n_startup_trials
        return optuna.pruners.MedianPruner(n_startup_trials=warmup)
    return optuna.pruners.NopPruner()
