"""The benchmarks' best-so-far figures: median over seeds with the inter-quartile band."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
import math
from pathlib import Path

import numpy as np

from benchmarks._methods import KNOWN_METHODS
from benchmarks._methods import METHOD_LABELS


def colour_order(methods: Iterable[str]) -> list[str]:
    """The methods of one figure in the order their colours are drawn from a 10-colour map.

    :data:`KNOWN_METHODS`'s order among these methods, then any others sorted, so that a
    figure of up to ten methods never gives two of them one colour.
    """
    drawn = set(methods)
    known = [m for m in KNOWN_METHODS if m in drawn]
    return known + sorted(drawn - set(known))


def plot_curves(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    path: Path,
    *,
    ylabel: str,
    logy: bool = False,
    titles: Mapping[str, str] | None = None,
    zoom_from: int | None = None,
    labels: Mapping[str, str] | None = None,
) -> None:
    """Plot best-so-far curves: median over seeds with the inter-quartile band.

    Args:
        curves: task -> method -> array (n_seeds, n_trials) of best-so-far values.
        path: PNG file to write.
        ylabel: Label of the y axis.
        logy: Log scale on the y axis (for regret).
        titles: Optional task -> subplot title.
        zoom_from: For curves that increase (accuracy), start the y axis at the lowest
            median of any method at this trial (1-based), so that the first random trials
            do not squash the differences that matter; ``None`` shows everything.
        labels: Optional method -> legend name (default: :data:`METHOD_LABELS`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(curves)
    ncol = min(2, len(tasks)) or 1
    nrow = math.ceil(len(tasks) / ncol) or 1
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.5 * ncol, 4.2 * nrow), squeeze=False)
    colors = plt.get_cmap("tab10")
    method_order = colour_order(m for per_task in curves.values() for m in per_task)
    for ax, task in zip(axes.flat, tasks, strict=False):
        for method, arr in curves[task].items():
            arr = np.asarray(arr, dtype=float)
            x = np.arange(1, arr.shape[1] + 1)
            med = np.median(arr, axis=0)
            lo, hi = np.percentile(arr, [25, 75], axis=0)
            ci = method_order.index(method)
            style = "-" if method.startswith("bocr") else "--"
            name = (labels or {}).get(method) or METHOD_LABELS.get(method, method)
            label = f"{name} (n={arr.shape[0]})"
            ax.plot(x, med, style, color=colors(ci % 10), label=label, lw=1.6)
            if arr.shape[0] > 1:
                ax.fill_between(x, lo, hi, color=colors(ci % 10), alpha=0.12, lw=0)
        if zoom_from is not None:
            at = [
                float(np.median(np.asarray(a, dtype=float)[:, min(zoom_from, a.shape[1]) - 1]))
                for a in curves[task].values()
            ]
            top = max(float(np.max(a)) for a in curves[task].values())
            if at and min(at) < top:
                ax.set_ylim(min(at) - 0.05 * (top - min(at)), top + 0.05 * (top - min(at)))
        ax.set_title((titles or {}).get(task, task))
        ax.set_xlabel("trials")
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    fig.tight_layout()
    # One legend for the figure, below the axes, so that it never hides a curve.
    legend = {
        label: h
        for ax in axes.flat
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True)
    }
    fig.legend(
        legend.values(),
        legend.keys(),
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=ncol,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
