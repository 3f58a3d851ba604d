"""Grouping similar search parameters: distances between parameters and a Ward tree.

Every stage of :class:`~optuna_bocr.BOCRSampler` cuts the *same* Ward linkage tree, so a
finer stage always refines the clusters of a coarser one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.cluster.hierarchy import cut_tree
from scipy.cluster.hierarchy import ward
from scipy.spatial.distance import pdist
from scipy.spatial.distance import squareform

_GRID_SIZE = 512
_GRID_PAD_BANDWIDTHS = 4.0


def _kde_bandwidth(shifted: np.ndarray) -> float:
    """Scott's bandwidth (standard deviation of the Gaussian kernel), as ``gaussian_kde``'s.

    ``gaussian_kde(x, bw_method="scott")`` uses the unbiased sample standard deviation times
    ``n ** (-1 / 5)`` in one dimension; computed directly here, because the structure test
    (:func:`structure_pvalue`) evaluates thousands of densities.
    """
    if shifted.size < 2 or np.ptp(shifted) == 0.0:
        return 0.0
    return float(np.std(shifted, ddof=1) * shifted.size ** (-0.2))


def kde_densities(samples: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate a Gaussian KDE of each median-shifted sample set on one shared grid.

    Each sample set is shifted by its median, a Gaussian KDE with Scott's bandwidth (the
    density of :class:`scipy.stats.gaussian_kde`, computed in one array operation) is fitted,
    and all are evaluated on one grid that covers every shifted sample set plus four of the
    largest bandwidths on each side (so no density is truncated, unlike a fixed grid). A
    sample set without spread (one value, or all equal) is a point mass; it is drawn as a
    Gaussian one grid step wide.

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
            # The density of gaussian_kde(s, bw_method="scott") on the grid, vectorised.
            z = (grid[:, None] - s[None, :]) / bw
            densities[i] = np.exp(-0.5 * z * z).mean(axis=1) / (bw * np.sqrt(2.0 * np.pi))
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
        # Far tails underflow to subnormals whose half would be 0 inside SciPy's Jensen-Shannon
        # mixture, giving log(p / 0) = inf; they carry no mass, so drop them.
        probs = np.where(probs < 1e-100, 0.0, probs)
        # SciPy's pdist computes the distance with natural logarithms; base 2 divides the
        # divergence by ln 2.
        out = pdist(probs, metric="jensenshannon") / np.sqrt(np.log(2.0))
        return np.nan_to_num(out, nan=0.0)  # sqrt of a rounding-negative divergence
    if distance == "st":
        assert vectors is not None
        scale = np.max(np.abs(vectors), axis=0)
        scaled = vectors / np.where(scale > 0, scale, 1.0)
        return pdist(scaled, metric="euclidean")
    raise ValueError(f"Unknown distance {distance!r}; expected 'eu', 'js' or 'st'.")


def silhouette(condensed: np.ndarray, groups: Sequence[Sequence[int]]) -> float:
    """Mean silhouette width of a partition, from a condensed distance matrix.

    For each item: ``a`` is its mean distance to the other members of its cluster, ``b`` the
    smallest mean distance to the members of another cluster, and its width is
    ``(b - a) / max(a, b)`` (0 for a cluster of one, and where ``a == b == 0``). Near 1: tight,
    well separated clusters; near 0: no structure.

    Args:
        condensed: Condensed distance matrix between the items.
        groups: The clusters, as lists of item indices (at least two clusters).
    """
    square = squareform(condensed)
    widths = np.zeros(len(square))
    for g, members in enumerate(groups):
        if len(members) < 2:
            continue
        others = [o for h, o in enumerate(groups) if h != g]
        for i in members:
            a = square[i, members].sum() / (len(members) - 1)
            b = min(square[i, o].mean() for o in others)
            top = max(a, b)
            widths[i] = (b - a) / top if top > 0 else 0.0
    return float(widths.mean())


def structure_pvalue(
    *,
    distance: str,
    n_clusters: int,
    samples: Sequence[np.ndarray] | None = None,
    vectors: np.ndarray | None = None,
    n_null: int = 19,
    seed: int = 0,
) -> float:
    """Permutation test: do the features group the parameters better than chance?

    The statistic is the :func:`silhouette` of the Ward tree cut into ``n_clusters``. Under
    the null hypothesis the parameters do not differ: for samples (``"eu"``, ``"js"``), each
    parameter's samples are redrawn (same count, with replacement) from the pooled
    median-shifted samples of all parameters; for vectors (``"st"``), each feature column is
    permuted across the parameters. The same clustering is repeated on ``n_null`` such data
    sets.

    Returns:
        ``(1 + #null statistics >= observed) / (1 + n_null)``: small when the features show
        cluster structure (the smallest possible value is ``1 / (1 + n_null)``).
    """
    rng = np.random.default_rng(seed)
    n = len(samples) if samples is not None else len(vectors)  # type: ignore[arg-type]

    def statistic(s: Sequence[np.ndarray] | None, v: np.ndarray | None) -> float:
        condensed = distance_matrix(distance=distance, samples=s, vectors=v)
        return silhouette(condensed, WardTree(condensed, n).cut(n_clusters))

    observed = statistic(samples, vectors)
    exceed = 0
    if samples is not None:
        pool = np.concatenate([np.asarray(x, dtype=float) - np.median(x) for x in samples])
        sizes = [len(x) for x in samples]
        for _ in range(n_null):
            null = [rng.choice(pool, size=k, replace=True) for k in sizes]
            exceed += statistic(null, None) >= observed
    else:
        assert vectors is not None
        for _ in range(n_null):
            null_v = np.stack([rng.permutation(col) for col in vectors.T], axis=1)
            exceed += statistic(None, null_v) >= observed
    return (1 + exceed) / (1 + n_null)


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
