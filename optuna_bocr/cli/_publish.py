"""What a finished ``prune`` leaves for people: plots, dashboard artifacts and the note.

The exported network and the plot of its widths go to an Optuna artifact store (the
dashboard lists them on the study page); the note is written by
:func:`~optuna_bocr.cli._note.save_bocr_note`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna

from optuna_bocr.cli._note import save_bocr_note
from optuna_bocr.cli._note import store_layout


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
    store_layout(study, sampler)  # the ratio plot colours the layers by these clusters
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
