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
from pathlib import Path
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


def _store_layout(study: optuna.Study, sampler: Any) -> dict[str, Any] | None:
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

    layout = _store_layout(study, sampler)
    kwargs: dict[str, Any] = dict(layout or {})
    name = type(sampler).__name__ if sampler is not None else "unknown"
    text = bocr_note(study, sampler_name=name, schedule=schedule, artifacts=artifacts, **kwargs)
    save_note(study, text)
    return text


def upload_trial_files(
    study: optuna.Study, store_dir: str | Path, trial_number: int, files: Mapping[str, Path]
) -> list[str]:
    """Upload files to a FileSystemArtifactStore under the names ``trial<N>-<name>``.

    A name the study already has is not uploaded again (a resumed study whose best trial
    did not change).

    Optuna refuses to change a finished trial, so the files are attached to the study (the
    dashboard lists them on the study page); their names carry the trial number.

    Args:
        study: The study.
        store_dir: Folder of the :class:`~optuna.artifacts.FileSystemArtifactStore`.
        trial_number: The trial the files belong to.
        files: Name (e.g. ``"model.pt"``) -> file to upload.

    Returns:
        The artifact file names.
    """
    import shutil
    import tempfile

    from optuna.artifacts import FileSystemArtifactStore
    from optuna.artifacts import get_all_artifact_meta
    from optuna.artifacts import upload_artifact

    store_path = Path(store_dir).expanduser()
    store_path.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(store_path))
    present = {m.filename for m in get_all_artifact_meta(study)}
    names = []
    with tempfile.TemporaryDirectory() as tmp:
        for short, file in files.items():
            name = f"trial{trial_number}-{short}"
            names.append(name)
            if name in present:  # a resumed study whose best trial did not change
                continue
            staged = Path(tmp) / name
            shutil.copyfile(file, staged)
            upload_artifact(
                artifact_store=store,
                file_path=str(staged),
                study_or_trial=study,
                mimetype="image/png" if name.endswith(".png") else "application/octet-stream",
            )
    return names


def publish_prune_results(
    study: optuna.Study,
    sampler: Any,
    objective: Any,
    *,
    export_path: Path | None,
    artifact_store: str | Path | None,
    schedule: Mapping[str, Any] | None = None,
) -> list[tuple[str, str]]:
    """What a finished ``prune`` leaves for people: plots, artifacts and the dashboard note.

    The plots (when matplotlib is installed and the best trial is exported) lie next to the
    exported file: ``<export>-ratios.png`` and ``<export>-history.png``. With an artifact
    store, the exported model and the plot of its widths are uploaded as
    ``trial<N>-model.pt`` and ``trial<N>-ratios.png``.

    Returns:
        ``(label, text)`` rows for the command's summary table.
    """
    from optuna_bocr.cli._plots import have_matplotlib
    from optuna_bocr.cli._plots import write_trial_plots

    best = study.best_trial
    rows: list[tuple[str, str]] = []
    files: dict[str, Path] = {}
    _store_layout(study, sampler)  # the ratio plot colours the layers by these clusters
    if export_path is not None:
        files["model.pt"] = export_path
        if have_matplotlib():
            stem = export_path.with_suffix("")
            ratios, history = write_trial_plots(
                study,
                objective,
                best,
                stem.with_name(stem.name + "-ratios.png"),
                stem.with_name(stem.name + "-history.png"),
            )
            rows.append(("Plots", f"{ratios}, {history}"))
            files["ratios.png"] = ratios
    names: list[str] = []
    if artifact_store is not None and files:
        names = upload_trial_files(study, artifact_store, best.number, files)
        rows.append(("Artifacts", f"{', '.join(names)} in {artifact_store}"))
    save_bocr_note(study, sampler, schedule=schedule, artifacts=names)
    rows.append(("Note", "clusters, structure test, stages: the study's Note tab, dashboard"))
    return rows
