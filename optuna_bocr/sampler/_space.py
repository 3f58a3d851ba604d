"""The search space of one BOCR stage and its three coordinate systems.

A trial is a point in three coordinate systems:

``params``
    one value per parameter (``search_space`` order), what Optuna stores as the trial's
    params and what the objective evaluates;
``cluster values``
    one value per cluster of the stage: the mean of the cluster's members (every member of
    a cluster gets the cluster's value, clipped to its own distribution);
``unit``
    the cluster values scaled so that the stage's bounds are the unit cube: the GP and the
    acquisition work here.

:class:`StageSpace` owns one stage's clusters and bounds and converts between them (in the
spirit of Optuna's ``optuna/_gp/search_space.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.distributions import FloatDistribution

ArrayLikeFloat = Sequence[float] | np.ndarray


def validate_search_space(
    search_space: Mapping[str, BaseDistribution],
) -> dict[str, FloatDistribution]:
    """Check that every distribution is a linear float range without a step.

    Raises:
        TypeError: Not a mapping, or a distribution that is not a FloatDistribution.
        ValueError: An empty space, or a log or step distribution.
    """
    if not isinstance(search_space, Mapping):
        raise TypeError(
            "search_space must be a mapping name -> FloatDistribution, got "
            f"{type(search_space).__name__}."
        )
    if len(search_space) == 0:
        raise ValueError("search_space must not be empty.")
    out: dict[str, FloatDistribution] = {}
    for name, dist in search_space.items():
        if not isinstance(dist, FloatDistribution):
            raise TypeError(
                f"search_space[{name!r}] is {type(dist).__name__}; BOCRSampler searches "
                "continuous parameters only (FloatDistribution)."
            )
        if dist.log:
            raise ValueError(
                f"search_space[{name!r}] has log=True; not supported, because a cluster "
                "shares one value on a linear scale among its members."
            )
        if dist.step is not None:
            raise ValueError(
                f"search_space[{name!r}] has step={dist.step}; not supported, because the "
                "cluster means that map observations between stages fall off the step grid."
            )
        out[name] = dist
    return out


@dataclass(frozen=True, eq=False)
class StageSpace:
    """One stage: its clusters of parameters and the bounds of its cluster values.

    Build it with :meth:`from_clusters`; :meth:`with_bounds` gives the same clusters with
    the bounds a stage opening chose.

    Attributes:
        clusters: Parameter indices of each cluster (each sorted, ordered by first member).
        param_lows: Lowest value of each parameter (its distribution's ``low``).
        param_highs: Highest value of each parameter.
        mean_matrix: ``(n_clusters, n_params)``: row ``c`` averages the members of ``c``.
        member_cluster: ``(n_params,)``: the cluster of each parameter.
        cluster_lows: Lowest value any member of each cluster allows (union range).
        cluster_highs: Highest value any member of each cluster allows.
        lower: Lower bound of each cluster value in this stage (unit coordinate 0).
        upper: Upper bound of each cluster value in this stage (unit coordinate 1).
    """

    clusters: tuple[tuple[int, ...], ...]
    param_lows: np.ndarray
    param_highs: np.ndarray
    mean_matrix: np.ndarray
    member_cluster: np.ndarray
    cluster_lows: np.ndarray
    cluster_highs: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    @classmethod
    def from_clusters(
        cls, clusters: Sequence[Sequence[int]], param_lows: np.ndarray, param_highs: np.ndarray
    ) -> StageSpace:
        """A stage whose bounds are the clusters' whole (union) ranges."""
        n_params = len(param_lows)
        mat = np.zeros((len(clusters), n_params))
        member = np.zeros(n_params, dtype=int)
        for c, members in enumerate(clusters):
            mat[c, list(members)] = 1.0 / len(members)
            member[list(members)] = c
        lows = np.array([param_lows[list(g)].min() for g in clusters])
        highs = np.array([param_highs[list(g)].max() for g in clusters])
        return cls(
            clusters=tuple(tuple(int(i) for i in g) for g in clusters),
            param_lows=np.asarray(param_lows, dtype=float),
            param_highs=np.asarray(param_highs, dtype=float),
            mean_matrix=mat,
            member_cluster=member,
            cluster_lows=lows,
            cluster_highs=highs,
            lower=lows,
            upper=highs,
        )

    def with_bounds(self, lower: ArrayLikeFloat, upper: ArrayLikeFloat) -> StageSpace:
        """The same clusters with other bounds of the cluster values."""
        lo = np.asarray(lower, dtype=float)
        hi = np.asarray(upper, dtype=float)
        if lo.shape != (self.dim,) or hi.shape != (self.dim,):
            raise ValueError(
                f"Stage bounds must have {self.dim} entries (one per cluster), got "
                f"{lo.shape} and {hi.shape}."
            )
        return replace(self, lower=lo, upper=hi)

    @property
    def dim(self) -> int:
        """Number of search variables (clusters) of the stage."""
        return len(self.clusters)

    @property
    def _scale(self) -> np.ndarray:
        width = self.upper - self.lower
        return np.where(width > 0, width, 1.0)

    def cluster_values(self, params: np.ndarray) -> np.ndarray:
        """``(..., n_params)`` per-parameter values -> ``(..., n_clusters)`` cluster means."""
        return params @ self.mean_matrix.T

    def to_unit(self, params: np.ndarray) -> np.ndarray:
        """``(..., n_params)`` per-parameter values -> the stage's unit coordinates.

        Points outside the stage's bounds map outside ``[0, 1]`` (not clipped).
        """
        return (self.cluster_values(params) - self.lower) / self._scale

    def unit_to_clusters(self, unit: np.ndarray) -> np.ndarray:
        """``(..., n_clusters)`` unit coordinates -> cluster values."""
        return self.lower + unit * (self.upper - self.lower)

    def unit_to_params(self, unit: np.ndarray) -> np.ndarray:
        """``(..., n_clusters)`` unit coordinates -> per-parameter values.

        Each parameter takes its cluster's value, clipped to its own range.
        """
        values = self.unit_to_clusters(unit)[..., self.member_cluster]
        return np.clip(values, self.param_lows, self.param_highs)
