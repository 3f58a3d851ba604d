"""PNG plots of a pruning study: the search history with its stages, the best network's widths.

Both need matplotlib (in the ``dev`` and ``benchmark`` extras); :func:`have_matplotlib` tells
whether it is installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
import importlib.util
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from optuna_bocr.keys import N_CLUSTERS_KEY
from optuna_bocr.keys import STAGE_KEY

_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)


def _save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (creating the folder) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def have_matplotlib() -> bool:
    """Whether matplotlib is installed."""
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(
    study: optuna.Study,
    path: str | Path,
    *,
    title: str | None = None,
    baseline: float | None = None,
) -> Path:
    """Best value so far against the trial number, with each BOCR stage change marked.

    Args:
        study: A single-objective study; stages come from the trials' stage user attr.
        path: PNG file to write.
        title: Plot title (default: the study name).
        baseline: A horizontal reference line (e.g. the unpruned network's accuracy).

    Returns:
        ``path``.
    """
    plt = _pyplot()
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    trials.sort(key=lambda t: t.number)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    xs = [t.number for t in trials]
    ys = [float(t.value) for t in trials]  # type: ignore[arg-type]
    best: list[float] = []
    for y in ys:
        best.append(y if not best else (max(best[-1], y) if maximize else min(best[-1], y)))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.scatter(xs, ys, s=14, color="#9ecae1", label="trial", zorder=2)
    ax.step(xs, best, where="post", color="#08519c", lw=2, label="best so far", zorder=3)
    if baseline is not None:
        ax.axhline(baseline, color="#555555", ls=":", lw=1.2, label="unpruned")
    openings: dict[int, int] = {}
    for t in study.get_trials(deepcopy=False):
        s = t.user_attrs.get(STAGE_KEY)
        if isinstance(s, int) and (s not in openings or t.number < openings[s]):
            openings[s] = t.number
    sizes: dict[int, int] = {}
    for t in trials:
        s, k = t.user_attrs.get(STAGE_KEY), t.user_attrs.get(N_CLUSTERS_KEY)
        if isinstance(s, int) and isinstance(k, int):
            sizes[s] = k
    for s, number in sorted(openings.items()):
        if s == 0:
            continue
        ax.axvline(number - 0.5, color="#d62728", ls="--", lw=1.2, zorder=1)
        label = f"stage {s}" + (f" ({sizes[s]} vars)" if s in sizes else "")
        ax.text(
            number - 0.3,
            0.02,
            label,
            rotation=90,
            color="#d62728",
            fontsize=8,
            transform=ax.get_xaxis_transform(),
            va="bottom",
        )
    if ys and maximize:
        # Collapsed trials (near chance accuracy) would squash the interesting part: the
        # axis starts at a useful floor, and trials below it are drawn on it as triangles.
        q = sorted(ys)[len(ys) // 4]
        floor = min(q - 0.5 * (best[-1] - q), baseline if baseline is not None else q)
        top = max(best[-1], baseline if baseline is not None else best[-1])
        pad = 0.05 * max(top - floor, 1e-6)
        below = [(x, y) for x, y in zip(xs, ys, strict=True) if y < floor]
        if below:
            ax.scatter(
                [x for x, _ in below], [floor - pad / 2] * len(below), marker="v", s=18,
                color="#9ecae1", label=f"trial below {floor:.3g}", zorder=2,
            )  # fmt: skip
        ax.set_ylim(floor - pad, top + pad)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    metric = (study.metric_names or ["objective"])[0]
    label = "validation top-1 (%)" if metric == "top1" else metric
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    ax.set_title(title or f"{study.study_name}: {label}, best so far", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_layer_ratios(
    names: Sequence[str],
    original: Sequence[int],
    kept: Sequence[int],
    path: str | Path,
    *,
    clusters: Sequence[Sequence[str]] | None = None,
    title: str = "",
) -> Path:
    """Kept input channels of each prunable layer against its unpruned width.

    Args:
        names: Prunable layer names, in network order.
        original: Unpruned input channels of each layer.
        kept: Kept input channels of each layer.
        path: PNG file to write.
        clusters: Layer names of each cluster (BOCR's first stage); kept bars are coloured
            by cluster. :obj:`None`: one colour.
        title: Plot title.

    Returns:
        ``path``.
    """
    plt = _pyplot()
    colour_of: dict[str, str] = {}
    handles: list[Any] = []
    if clusters:
        from matplotlib.patches import Patch

        for c, members in enumerate(clusters):
            colour = _PALETTE[c % len(_PALETTE)]
            for n in members:
                colour_of[n] = colour
            n_members = f"{len(members)} layer" + ("" if len(members) == 1 else "s")
            handles.append(Patch(color=colour, label=f"cluster {c + 1} ({n_members})"))
    x = list(range(len(names)))
    fig, ax = plt.subplots(figsize=(max(6.5, 0.32 * len(names) + 2.5), 4.4))
    ax.bar(x, original, color="#e0e0e0", edgecolor="#b0b0b0", label="unpruned width")
    ax.bar(x, kept, color=[colour_of.get(n, _PALETTE[0]) for n in names], label="kept")
    for i, (o, k) in enumerate(zip(original, kept, strict=True)):
        ax.text(i, k, f"{k / o:.2f}", ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_ylabel("input channels")
    ax.set_ylim(0, 1.12 * max(original, default=1))
    ax.set_title(title, fontsize=10)
    own, labels = ax.get_legend_handles_labels()
    if handles:
        own = [own[0], *handles]
        labels = [labels[0], *(h.get_label() for h in handles)]
    ax.legend(own, labels, loc="upper left", fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def objective_layer_widths(
    objective: Any, ratios: Mapping[str, float]
) -> tuple[list[str], list[int], list[int]]:
    """Names, unpruned input channels and kept input channels of a pruning objective's layers.

    Args:
        objective: A :class:`~optuna_bocr.pruning.PruningObjective`.
        ratios: The trial's (actual) ratios; the budget rule is applied again.
    """
    names = list(objective.search_space)
    kept = objective.kept_channels(objective.clip(ratios))
    vectors = objective.layer_features().vectors
    return names, [int(vectors[n][0]) for n in names], [int(len(kept[n])) for n in names]


def first_stage_clusters(study: optuna.Study) -> list[list[str]] | None:
    """BOCR's first-stage clusters as recorded on the study, when they group any layers."""
    from optuna_bocr.keys import BOCR_STRUCTURE_KEY

    layout = study.user_attrs.get(BOCR_STRUCTURE_KEY)
    if not isinstance(layout, Mapping):
        return None
    clusters = layout.get("clusters") or []
    if not clusters or all(len(c) == 1 for c in clusters[0]):
        return None
    return [list(c) for c in clusters[0]]


def write_trial_plots(
    study: optuna.Study,
    objective: Any,
    trial: optuna.trial.FrozenTrial,
    ratios_path: str | Path,
    history_path: str | Path,
) -> list[Path]:
    """The per-layer ratio plot of ``trial`` and the study's history plot; their paths.

    Args:
        study: The study (its baseline and BOCR layout user attrs are used when present).
        objective: The study's :class:`~optuna_bocr.pruning.PruningObjective`.
        trial: A COMPLETE trial of the study (usually the best).
        ratios_path: PNG file of the per-layer widths.
        history_path: PNG file of the best value so far.
    """
    from optuna_bocr.keys import ACTUAL_PARAMS_KEY
    from optuna_bocr.keys import FLOPS_RATIO_KEY

    names, original, kept = objective_layer_widths(
        objective, trial.user_attrs.get(ACTUAL_PARAMS_KEY, trial.params)
    )
    flops = trial.user_attrs.get(FLOPS_RATIO_KEY)
    title = f"{study.study_name}, trial {trial.number}: {trial.value:.2f}% val top-1" + (
        f", {float(flops):.2f} of the FLOPs" if flops is not None else ""
    )
    out = [
        plot_layer_ratios(
            names,
            original,
            kept,
            ratios_path,
            clusters=first_stage_clusters(study),
            title=title,
        )
    ]
    baseline = study.user_attrs.get("baseline_top1")
    out.append(
        plot_history(
            study,
            history_path,
            baseline=float(baseline) if isinstance(baseline, (int, float)) else None,
        )
    )
    return out
