"""Grouping similar search parameters: distances between parameters and a Ward tree.

Every stage of :class:`~optuna_bocr.BOCRSampler` cuts the *same* Ward linkage tree, so a
finer stage always refines the clusters of a coarser one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.cluster.hierarchy import cut_tree
from scipy.cluster.hierarchy import ward
from scipy.spatial.distance import jensenshannon
from scipy.spatial.distance import pdist
from scipy.spatial.distance import squareform
from scipy.stats import gaussian_kde

_GRID_SIZE = 512
_GRID_PAD_BANDWIDTHS = 4.0


def _kde_bandwidth(shifted: np.ndarray) -> float:
    """Scott's bandwidth (standard deviation of the Gaussian kernel) of ``gaussian_kde``."""
    if shifted.size < 2 or np.ptp(shifted) == 0.0:
        return 0.0
    kde = gaussian_kde(shifted, bw_method="scott")
    return float(np.sqrt(kde.covariance[0, 0]))


def kde_densities(samples: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate a Gaussian KDE of each median-shifted sample set on one shared grid.

    Each sample set is shifted by its median, a Gaussian KDE with Scott's bandwidth
    (:class:`scipy.stats.gaussian_kde`) is fitted, and all are evaluated on one grid that
    covers every shifted sample set plus four of the largest bandwidths on each side (so no
    density is truncated, unlike a fixed grid). A sample set without spread (one value, or
    all equal) is a point mass; it is drawn as a Gaussian one grid step wide.

    Args:
        samples: One 1-D array of finite values per parameter, each non-empty.

    Returns:
        ``(grid, densities)``: the grid (1-D) and one density row per parameter.
    """
    shifted = [np.asarray(s, dtype=float) - np.median(s) for s in samples]
    bandwidths = [_kde_bandwidth(s) for s in shifted]
    pad = _GRID_PAD_BANDWIDTHS * max(max(bandwidths), 1e-12)
    lo = min(float(s.min()) for s in shifted) - pad
    hi = max(float(s.max()) for s in shifted) + pad
    grid = np.linspace(lo, hi, _GRID_SIZE)
    step = grid[1] - grid[0]
    densities = np.empty((len(shifted), _GRID_SIZE))
    for i, (s, bw) in enumerate(zip(shifted, bandwidths, strict=True)):
        if bw > 0.0:
            densities[i] = gaussian_kde(s, bw_method="scott")(grid)
        else:
            z = (grid - s[0]) / step
            densities[i] = np.exp(-0.5 * z * z) / (step * np.sqrt(2.0 * np.pi))
    return grid, densities


def distance_matrix(
    *,
    distance: str,
    samples: Sequence[np.ndarray] | None = None,
    vectors: np.ndarray | None = None,
) -> np.ndarray:
    """Condensed matrix of pairwise distances between parameters.

    Args:
        distance:
            ``"eu"``: L2 distance between the KDE densities of the samples (approximated on
            the grid); ``"js"``: Jensen-Shannon distance (square root of the divergence,
            base 2, so in [0, 1]) between the densities; ``"st"``: Euclidean distance
            between the feature vectors after each column is divided by its maximum absolute
            value (an all-zero column stays zero).
        samples: Per-parameter samples (for ``"eu"`` and ``"js"``).
        vectors: 2-D array, one row per parameter (for ``"st"``).

    Returns:
        The condensed distance matrix (as :func:`scipy.spatial.distance.pdist` returns).
    """
    if distance in ("eu", "js"):
        assert samples is not None
        grid, dens = kde_densities(samples)
        if distance == "eu":
            return pdist(dens * np.sqrt(grid[1] - grid[0]), metric="euclidean")
        probs = dens / dens.sum(axis=1, keepdims=True)
        # Far tails underflow to subnormals whose half would be 0 inside jensenshannon's
        # mixture, giving log(p / 0) = inf; they carry no mass, so drop them.
        probs = np.where(probs < 1e-100, 0.0, probs)
        n = len(probs)
        out = np.zeros(n * (n - 1) // 2)
        k = 0
        for i in range(n):
            for j in range(i + 1, n):
                out[k] = float(jensenshannon(probs[i], probs[j], base=2.0))
                k += 1
        return np.nan_to_num(out, nan=0.0)  # sqrt of a rounding-negative divergence
    if distance == "st":
        assert vectors is not None
        scale = np.max(np.abs(vectors), axis=0)
        scaled = vectors / np.where(scale > 0, scale, 1.0)
        return pdist(scaled, metric="euclidean")
    raise ValueError(f"Unknown distance {distance!r}; expected 'eu', 'js' or 'st'.")


class WardTree:
    """A Ward linkage tree over ``n`` parameters that can be cut at any number of clusters.

    Args:
        condensed: Condensed distance matrix between the ``n`` parameters.
        n: Number of parameters.
    """

    def __init__(self, condensed: np.ndarray, n: int) -> None:
        if condensed.shape != (n * (n - 1) // 2,):
            raise ValueError(f"A condensed distance matrix for {n} items must have that shape.")
        self._n = n
        self._linkage = ward(condensed) if n >= 2 else None
        self._square = squareform(condensed) if n >= 2 else np.zeros((1, 1))

    def cut(self, k: int) -> list[list[int]]:
        """Cut the tree into ``k`` clusters.

        Returns:
            ``k`` lists of parameter indices, each sorted; the clusters are ordered by their
            smallest index, so the result does not depend on SciPy's label numbering.
        """
        if not 1 <= k <= self._n:
            raise ValueError(f"Cannot cut {self._n} items into {k} clusters.")
        if self._linkage is None:
            return [[0]]
        labels = cut_tree(self._linkage, n_clusters=k).ravel()
        groups: dict[int, list[int]] = {}
        for i, label in enumerate(labels):
            groups.setdefault(int(label), []).append(i)
        return sorted(groups.values(), key=lambda g: g[0])
