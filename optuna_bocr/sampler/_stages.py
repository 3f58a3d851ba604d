"""The stages' clusters: cut the features' Ward tree, test its structure, fall back.

Each stage of a schedule searches one variable per cluster of a cut of the same Ward tree
of the parameters' features (the last stage: one per parameter). Before cutting, the
first stage's clustering is tested against chance (:func:`structure_pvalue`); features
that fail get a warning and, with ``unstructured_fallback``, one stage of one variable
per parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import optuna

from optuna_bocr.sampler._clustering import distance_matrix
from optuna_bocr.sampler._clustering import structure_pvalue
from optuna_bocr.sampler._clustering import WardTree
from optuna_bocr.sampler._features import feature_arrays
from optuna_bocr.sampler._features import ParameterFeatures
from optuna_bocr.sampler._schedule import Schedule

_logger = optuna.logging.get_logger(__name__)

STRUCTURE_N_NULL = 19
STRUCTURE_ALPHA = 0.05
"""Features fail the structure test when its p-value (19 null data sets) is above this."""


@dataclass(frozen=True)
class StageClusters:
    """The schedule that is run, each stage's clusters, and the structure test's p-value.

    Attributes:
        schedule: The schedule asked for, or one stage of one variable per parameter (the
            fallback of features that fail the structure test).
        clusters: Per stage, its clusters as sorted lists of parameter indices, ordered by
            their smallest index.
        pvalue: The structure test's p-value; ``None`` when it was not run.
    """

    schedule: Schedule
    clusters: list[list[list[int]]]
    pvalue: float | None


def cluster_stages(
    features: ParameterFeatures,
    names: list[str],
    *,
    distance: Literal["eu", "js", "st"],
    schedule: Schedule,
    check_structure: bool,
    unstructured_fallback: bool,
) -> StageClusters:
    """Cut the Ward tree of ``features`` into the clusters of each stage of ``schedule``.

    Args:
        features: The parameters' features.
        names: The parameter names, in the search space's order.
        distance: Distance between two parameters' features.
        schedule: Stage sizes (clusters per stage) and stage changes.
        check_structure: Run the structure test when the first stage has between 1 and
            ``len(names)`` clusters (warn when it fails).
        unstructured_fallback: When the test fails, run one stage of one variable per
            parameter instead of ``schedule``.

    Raises:
        ValueError: ``distance`` is unknown, or ``unstructured_fallback`` is asked without
            ``check_structure``.
    """
    if distance not in ("eu", "js", "st"):
        raise ValueError(f"distance must be 'eu', 'js', 'st' or None, got {distance!r}.")
    if unstructured_fallback and not check_structure:
        raise ValueError("unstructured_fallback=True needs check_structure=True.")
    dims = len(names)
    samples, vectors = feature_arrays(features, distance, names)
    tree = WardTree(distance_matrix(distance=distance, samples=samples, vectors=vectors), dims)
    pvalue: float | None = None
    if check_structure and 1 < schedule.sizes[0] < dims:
        pvalue = structure_pvalue(
            distance=distance,
            n_clusters=schedule.sizes[0],
            samples=samples,
            vectors=vectors,
            n_null=STRUCTURE_N_NULL,
        )
        if pvalue > STRUCTURE_ALPHA:
            other = _other_distance_that_passes(distance, samples, schedule.sizes[0])
            _warn_unstructured(
                distance, dims, schedule.sizes[0], pvalue, unstructured_fallback, other
            )
            if unstructured_fallback:
                schedule = Schedule(
                    sizes=(dims,), rollback_at=(), patience=None, patience_from=None
                )
    return StageClusters(schedule, [tree.cut(k) for k in schedule.sizes], pvalue)


def _other_distance_that_passes(
    distance: str, samples: list[np.ndarray] | None, n_clusters: int
) -> tuple[str, float] | None:
    """The other distance between samples (``eu`` or ``js``) and its p-value, if it passes.

    The two see different things in the same densities: the Euclidean distance between
    their values is dominated by the most peaked ones, the Jensen-Shannon distance compares
    their shapes as distributions. On a trained ResNet-56 only ``js`` passed; its clusters
    searched as well as the ``eu`` ones there, no better (10 seeds, benchmarks/RECORD.md,
    "ResNet-56: clusters from the features that pass the structure test").
    """
    if samples is None or distance not in ("eu", "js"):
        return None
    other = "js" if distance == "eu" else "eu"
    pvalue = structure_pvalue(
        distance=other, n_clusters=n_clusters, samples=samples, n_null=STRUCTURE_N_NULL
    )
    return (other, pvalue) if pvalue <= STRUCTURE_ALPHA else None


def _warn_unstructured(
    distance: str,
    dims: int,
    n_clusters: int,
    pvalue: float,
    fallback: bool,
    other: tuple[str, float] | None,
) -> None:
    hint = (
        f" With distance {other[0]!r} they do (p = {other[1]:.2f}): pass "
        f"distance={other[0]!r} (command line: --distance {other[0]}) to cluster on what "
        "that distance sees."
        if other is not None
        else ""
    )
    then = (
        "BOCRSampler searches one variable per parameter from the first trial "
        "(unstructured_fallback=True)."
        if fallback
        else "Clustering anyway: a coarse first stage pays even then (on a pruned "
        "ResNet-20, random groups searched as well as its layer features, and one variable "
        "per parameter worse); pass unstructured_fallback=True to search one variable per "
        "parameter from the first trial, or give features that tell the parameters apart."
    )
    _logger.warning(
        f"The features (distance {distance!r}) do not group the {dims} parameters into "
        f"{n_clusters} clusters better than chance (permutation test, p = {pvalue:.2f}), so "
        f"the clusters are close to arbitrary groups.{hint} {then}"
    )
