"""What the GP is fitted on: the observed values, transformed.

A pruning study's values have a long lower tail: a few networks of the start-up design
score ten to twenty points below the rest while the search's later trials lie within a
point of each other.
Standardised (the mean subtracted, divided by the standard deviation) those few set the
scale, the networks the search has to tell apart differ by a few hundredths of it, and the
GP explains them as noise. A monotone warp that straightens the tail before standardising
(HEBO's power transform: Cowen-Rivers et al., "HEBO: Pushing the Limits of
Sample-Efficient Hyperparameter Optimisation", JAIR 2022), or one that keeps only the
order (a Gaussian copula, as CMA-ES keeps only ranks), lets it resolve them; the order of
the values, and so the best observation, is unchanged by either.

Every transform returns values of mean 0 and standard deviation 1 (0 for constant
values), the scale the GP's priors assume.

A sampler's choice may also name a transform per stage (:func:`stage_outcome`):
``"yeo-johnson-after-first"`` fits the first, clustered stage of a schedule of several on
the standardised values and the later ones on the warped values. A warped GP holds the
search longer in a coarse stage whose clusters cannot reach the optimum (on synthetic
misleading27 a median 29.5 trials instead of 18.5), likely because it resolves tiny gains
among the stage's near-equal values and each is a new best. Warped only after it, that
task ends level with GPSampler, but on a pruned ResNet-20 the search was behind the warp
throughout, so it is an option, not the default (benchmarks/RECORD.md).
"""

from __future__ import annotations

from typing import Literal
import warnings

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata
from scipy.stats import yeojohnson

OUTCOME_TRANSFORMS = ("standardize", "yeo-johnson", "rank")
"""``BOCRSampler``'s ``outcome_transform`` values (:func:`transform_outcomes`)."""

OutcomeTransform = Literal["standardize", "yeo-johnson", "rank"]

OUTCOME_CHOICES = (*OUTCOME_TRANSFORMS, "yeo-johnson-after-first")
"""``BOCRSampler``'s ``outcome_transform`` choices (:func:`stage_outcome`)."""

OutcomeChoice = Literal["standardize", "yeo-johnson", "rank", "yeo-johnson-after-first"]


def stage_outcome(choice: OutcomeChoice, stage: int, n_stages: int) -> OutcomeTransform:
    """The transform that ``choice`` fits stage ``stage`` (of ``n_stages``) on.

    ``"yeo-johnson-after-first"``: ``"standardize"`` in the first stage of a schedule of
    several, ``"yeo-johnson"`` in the others (and in a schedule of one stage); any other
    choice: itself in every stage.
    """
    if choice == "yeo-johnson-after-first":
        return "standardize" if stage == 0 and n_stages > 1 else "yeo-johnson"
    return choice


def transform_outcomes(y: np.ndarray, kind: OutcomeTransform = "standardize") -> np.ndarray:
    """``(n,)`` the values ``y`` as the GP is fitted on them (larger stays larger).

    Args:
        y: ``(n,)`` oriented observed values (larger is better), finite.
        kind: ``"standardize"``: mean 0, standard deviation 1. ``"yeo-johnson"``:
            standardised, warped by the Yeo-Johnson power transform whose exponent maximises
            the normal likelihood of the result (:func:`scipy.stats.yeojohnson`), and
            standardised again; the standardised values if the warp is not finite.
            ``"rank"``: the normal quantiles of the values' mid-ranks, ``(rank - 0.5) / n``
            (ties share one), standardised.
    """
    y = np.asarray(y, dtype=float)
    z = _standardize(y)
    if kind == "standardize" or len(y) < 3 or not z.any():
        return z
    if kind == "rank":
        return _standardize(ndtri((rankdata(y) - 0.5) / len(y)))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        warped = np.asarray(yeojohnson(z)[0], dtype=float)
    if not np.all(np.isfinite(warped)):
        return z
    out = _standardize(warped)
    return out if np.all(np.isfinite(out)) else z


def _standardize(y: np.ndarray) -> np.ndarray:
    sd = y.std()
    return (y - y.mean()) / (sd if sd > 0 else 1.0)
