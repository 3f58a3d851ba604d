"""BOCR's own view of a study, as an optuna-dashboard study note (Markdown).

The note says what optuna-dashboard's generic plots do not: which layers each stage tied
together, whether the structure test found real structure, at which trial each stage
opened and inside which bounds it searched, and the FLOPs budget rule. The command line
writes it after ``prune``; from Python, call :func:`save_bocr_note` after
``study.optimize``.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
import math
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from optuna_bocr.keys import BOCR_STRUCTURE_KEY
from optuna_bocr.keys import STAGE_KEY
from optuna_bocr.keys import STUDY_CONFIG_KEY
from optuna_bocr.sampler import stage_openings as recorded_openings

NOTE_TITLE = "BOCR: how this study searched"
_ALPHA = 0.05


def stage_openings(trials: Sequence[FrozenTrial]) -> dict[int, int]:
    """Stage -> number of the first trial that ran in it (from the trials' stage attr)."""
    out: dict[int, int] = {}
    for t in trials:
        stage = t.user_attrs.get(STAGE_KEY)
        if isinstance(stage, int) and (stage not in out or t.number < out[stage]):
            out[stage] = t.number
    return dict(sorted(out.items()))


def _stage_bounds(trials: Sequence[FrozenTrial]) -> dict[int, tuple[list[float], list[float]]]:
    """Stage -> (lower, upper) per cluster, as the sampler recorded them on opening."""
    return {s: (lo, up) for s, (_, lo, up) in recorded_openings(trials).items()}


def _pvalue_text(p: float | None, k: int | None) -> str:
    if p is None:
        return (
            "Not tested (the first stage has one variable per layer, or a single cluster), "
            "so there is nothing to check."
        )
    if p <= _ALPHA:
        return (
            f"**p = {p:.3f}**: the layer features group the layers into {k} clusters better "
            "than in 19 data sets in which the layers do not differ (permutation test, "
            f"p <= {_ALPHA}). The clusters reflect real structure, so tying each cluster to "
            "one ratio is a sensible way to start."
        )
    return (
        f"**p = {p:.3f}**: the features do not group the layers better than chance "
        f"(p > {_ALPHA}), so the clusters are close to arbitrary groups. Such groups still "
        "make a useful first stage (on a pruned ResNet-20 random clusters searched as well "
        "as the L1 features, and one ratio per layer worse), and the rollback to one ratio "
        "per layer lifts the cap they set. `--unstructured-fallback` searches one ratio per "
        "layer from the start instead."
    )


def _fmt(v: float) -> str:
    return f"{v:.2f}"


def _best_in(trials: Sequence[FrozenTrial], stage: int) -> FrozenTrial | None:
    done = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and t.user_attrs.get(STAGE_KEY) == stage
        and t.value is not None
        and math.isfinite(t.value)
    ]
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def bocr_note(
    study: optuna.Study,
    *,
    stage_sizes: Sequence[int] | None = None,
    clusters: Sequence[Sequence[Sequence[str]]] | None = None,
    structure_pvalue: float | None = None,
    schedule: Mapping[str, Any] | None = None,
    sampler_name: str = "bocr",
    artifacts: Sequence[str] = (),
) -> str:
    """The Markdown text of the note (see :func:`save_bocr_note`).

    Args:
        study: The study; its trials give the stage openings, bounds and best values.
        stage_sizes: Search variables per stage (``BOCRSampler.stage_sizes``).
        clusters: Per stage, the layer names of each cluster (``BOCRSampler.clusters``).
        structure_pvalue: ``BOCRSampler.structure_pvalue``.
        schedule: ``rollback_at``, ``patience``, ``patience_from``, ``narrow_on_rollback``,
            ``observe_actual``, ``trust_region``, ``lengthscales`` and
            ``outcome_transform`` as the sampler got them, to state the stage-change rule
            (optional).
        sampler_name: Shown when the study did not use BOCR (no clusters).
        artifacts: File names attached to the study, listed at the end.

    Returns:
        Markdown.
    """
    trials = study.get_trials(deepcopy=False)
    config = study.user_attrs.get(STUDY_CONFIG_KEY)
    config = config if isinstance(config, Mapping) else {}
    lines = [f"# {NOTE_TITLE}", ""]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        stage = best.user_attrs.get(STAGE_KEY)
        lines.append(
            f"Best: **trial {best.number}**, value {best.value:.4g}"
            + (f", found in stage {stage}" if stage is not None else "")
            + f" ({len(complete)} completed trials)."
        )
        lines.append("")
    if not clusters or not stage_sizes:
        lines += [
            f"This study used the `{sampler_name}` sampler: one variable per layer from the "
            "first trial, no clusters and no stages.",
            "",
        ]
    else:
        k0 = len(clusters[0])
        lines += ["## Structure test", "", _pvalue_text(structure_pvalue, k0), ""]
        openings = stage_openings(trials)
        bounds = _stage_bounds(trials)
        lines += [
            "## Stages",
            "",
            "| Stage | Variables | Opened at trial | Best in stage |",
            "|---|---|---|---|",
        ]
        for s, size in enumerate(stage_sizes):
            opened = openings.get(s)
            best_s = _best_in(trials, s)
            lines.append(
                f"| {s} | {size} | {'not reached' if opened is None else opened} | "
                + ("-" if best_s is None else f"{best_s.value:.4g} (trial {best_s.number})")
                + " |"
            )
        lines.append("")
        if schedule:
            lines += [_schedule_text(schedule), ""]
        for s, groups in enumerate(clusters):
            lo_up = bounds.get(s)
            head = f"### Stage {s}: {len(groups)} variable" + ("" if len(groups) == 1 else "s")
            if s in openings:
                head += f", from trial {openings[s]}"
            lines += [head, ""]
            if len(groups) == sum(len(g) for g in groups):
                lines.append(
                    "One ratio per layer"
                    + (
                        ", searched inside the bounds set by the best trials so far."
                        if lo_up
                        else "."
                    )
                )
                if lo_up:
                    lines.append("")
                    lines.append(
                        "Bounds: "
                        + ", ".join(
                            f"{names[0]} {_fmt(a)}-{_fmt(b)}"
                            for names, a, b in zip(groups, *lo_up, strict=False)
                        )
                    )
                lines.append("")
                continue
            for c, names in enumerate(groups):
                bound = ""
                if lo_up and c < len(lo_up[0]):
                    bound = f" [bounds {_fmt(lo_up[0][c])}-{_fmt(lo_up[1][c])}]"
                members = f"{len(names)} layer" + ("" if len(names) == 1 else "s")
                lines.append(
                    f"- **Cluster {c + 1}** ({members}){bound}: "
                    + ", ".join(f"`{n}`" for n in names)
                )
            lines.append("")
    lines += ["## FLOPs budget rule", "", _budget_text(config), ""]
    if artifacts:
        lines += [
            "## Files",
            "",
            "Attached to the study (the Artifacts list of its main page): "
            + ", ".join(f"`{a}`" for a in artifacts)
            + ".",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def _schedule_text(schedule: Mapping[str, Any]) -> str:
    at = schedule.get("rollback_at")
    if not at:
        return "Stage changes: none (clustered search only)."
    patience = schedule.get("patience")
    since = list(schedule.get("patience_from") or [])
    changes = []
    for i, a in enumerate(at):
        text = f"stage {i + 1} opens at trial {a} at the latest"
        if patience == "auto":
            text += (
                " (or earlier, once max(6, 2 x the stage's variables) trials in a row "
                "bring no new best)"
            )
        elif patience and i < len(since):
            text += f" (from trial {since[i]} on, after {patience} trials without a new best)"
        changes.append(text)
    gain = schedule.get("patience_gain")
    crumbs = (
        f" (for the patience, a trial is a new best when it beats the last one by more than "
        f"{gain:g} x that best's lead over the median of the trials before it)"
        if patience and gain
        else ""
    )
    if schedule.get("narrow_on_rollback"):
        bounds = (
            "Each new stage searches inside the range of the 10 best trials so far (plus 5% "
            "of the full range on each side)"
        )
    else:
        bounds = "Each new stage searches the full range"
    if schedule.get("trust_region"):
        bounds += (
            ", and after the first stage the sampler proposes inside a box around the best "
            "trial that doubles after 3 new bests in a row and halves after a run without one"
        )
    tied = {
        "shared": ", and one GP lengthscale for all of them after the first stage",
        "clusters": ", and one GP lengthscale per first-stage cluster after the first stage",
    }.get(str(schedule.get("lengthscales")), "")
    tied += {
        "yeo-johnson": ", its GP fitted on the values warped by a fitted Yeo-Johnson transform",
        "rank": ", its GP fitted on the normal quantiles of the values' ranks",
        "yeo-johnson-after-first": ", its GP fitted after the first stage on the values "
        "warped by a fitted Yeo-Johnson transform",
    }.get(str(schedule.get("outcome_transform")), "")
    observed = (
        "at its ratios after the FLOPs budget rule (and at its moved proposal)"
        if schedule.get("observe_actual")
        else "at the ratios the sampler proposed"
    ) + tied
    return (
        "Stage changes: " + "; ".join(changes) + f"{crumbs}. {bounds}; every earlier trial "
        f"stays an observation, {observed}."
    )


def _budget_text(config: Mapping[str, Any]) -> str:
    target = config.get("flops_target")
    lbound = config.get("lbound")
    if target is None:
        return "Not a pruning study of the command line: no FLOPs budget recorded."
    if config.get("budget_rule", "wall") == "scale":
        rule = (
            "All proposed ratios are multiplied by one factor, the largest that keeps the "
            f"network within the budget (each ratio kept in [lbound = {lbound}, rbound]), so "
            "the proportions between the layers stay as proposed."
        )
    else:
        rule = (
            "Layers are decided in network order; each proposed ratio is clipped down so "
            f"that the budget could still be met with every later layer at lbound = {lbound}."
        )
    return (
        f"Every trial keeps at most **{float(target):g}** of the original FLOPs. {rule} The "
        "ratios really evaluated are the trial's `actual_params` user attr (what the "
        "exported model keeps)."
    )


def store_layout(study: optuna.Study, sampler: Any) -> dict[str, Any] | None:
    """Record a BOCRSampler's stages and clusters on the study; ``None`` for other samplers."""
    from optuna_bocr.sampler import BOCRSampler

    if not isinstance(sampler, BOCRSampler):
        return None
    layout = {
        "stage_sizes": sampler.stage_sizes,
        "clusters": [sampler.clusters(s) for s in range(sampler.n_stages)],
        "structure_pvalue": sampler.structure_pvalue,
    }
    if study.user_attrs.get(BOCR_STRUCTURE_KEY) != layout:
        study.set_user_attr(BOCR_STRUCTURE_KEY, layout)
    return layout


def save_bocr_note(
    study: optuna.Study,
    sampler: Any = None,
    *,
    schedule: Mapping[str, Any] | None = None,
    artifacts: Sequence[str] = (),
) -> str:
    """Write BOCR's view of ``study`` as its optuna-dashboard note, replacing an older one.

    Also stores the layout (stage sizes, clusters, p-value) as the study user attr
    :data:`~optuna_bocr.keys.BOCR_STRUCTURE_KEY` when ``sampler`` is a BOCRSampler.

    Args:
        study: The study (after or during ``optimize``).
        sampler: The :class:`~optuna_bocr.BOCRSampler` of the study; any other sampler (or
            :obj:`None`) gives a note without clusters and stages.
        schedule: See :func:`bocr_note`.
        artifacts: See :func:`bocr_note`.

    Returns:
        The Markdown text written.
    """
    from optuna_dashboard import save_note

    layout = store_layout(study, sampler)
    kwargs: dict[str, Any] = dict(layout or {})
    name = type(sampler).__name__ if sampler is not None else "unknown"
    text = bocr_note(study, sampler_name=name, schedule=schedule, artifacts=artifacts, **kwargs)
    save_note(study, text)
    return text
