"""Rank correlations of proxy scores with a target, and paired bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np


def _rank_stats(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Kendall's tau-b and Spearman's rho (NaN when either side is constant)."""
    from scipy import stats

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    return float(stats.kendalltau(x, y).statistic), float(stats.spearmanr(x, y).statistic)


def correlations(
    scores: dict[str, np.ndarray], y: np.ndarray, n_boot: int, seed: int, reference: str
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Tau and rho of every proxy against ``y``, with 95% percentile bootstrap intervals.

    The strategies are resampled with replacement, the same resamples for every proxy, so
    the differences to the ``reference`` proxy (``"dtau"``, ``"drho"``) are paired.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    boot: dict[str, list[tuple[float, float]]] = {p: [] for p in scores}
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        for p, x in scores.items():
            boot[p].append(_rank_stats(x[idx], y[idx]))
    ref = np.array(boot[reference])
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for p, x in scores.items():
        point = _rank_stats(x, y)
        arr = np.array(boot[p])
        diff = arr - ref
        entry = {}
        for j, name in enumerate(("tau", "rho")):
            lo, hi = np.nanpercentile(arr[:, j], [2.5, 97.5])
            entry[name] = (point[j], float(lo), float(hi))
            dlo, dhi = np.nanpercentile(diff[:, j], [2.5, 97.5])
            ref_point = _rank_stats(scores[reference], y)[j]
            entry["d" + name] = (point[j] - ref_point, float(dlo), float(dhi))
        out[p] = entry
    return out
