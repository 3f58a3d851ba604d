"""Per-parameter features that :class:`~optuna_bocr.BOCRSampler` clusters on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class ParameterFeatures:
    """What is known about each search parameter, for grouping similar parameters.

    Either part may be empty; the sampler's ``distance`` argument picks which one is used.

    Attributes:
        samples:
            Parameter name -> 1-D array of samples of a per-parameter quantity (for channel
            pruning: the L1 importance of each input channel of the layer). Parameters are
            compared through kernel density estimates of these samples (distances ``"eu"``
            and ``"js"``).
        vectors:
            Parameter name -> 1-D feature vector of a fixed length (for channel pruning: the
            structural features c_in, c_out, kernel size, params, FLOPs, output size,
            c_in / c_out). Compared by Euclidean distance after each column is divided by its
            maximum absolute value (distance ``"st"``).
    """

    samples: Mapping[str, np.ndarray] = field(default_factory=dict)
    vectors: Mapping[str, np.ndarray] = field(default_factory=dict)


def parse_features(
    features: ParameterFeatures | Mapping[str, ArrayLike] | ArrayLike, names: list[str]
) -> ParameterFeatures:
    """Check the ``features`` argument of the sampler and bring it to one form.

    Args:
        features: :class:`ParameterFeatures`, a mapping name -> structural vector, or a 2-D
            array with one row per parameter (``names`` order).
        names: Parameter names, ``search_space`` order.

    Raises:
        TypeError: ``features`` has none of these forms.
        ValueError: Wrong shape, or names that do not match ``names``.
    """
    if isinstance(features, ParameterFeatures):
        parsed = features
    elif isinstance(features, Mapping):
        parsed = ParameterFeatures(
            vectors={k: np.asarray(v, dtype=float) for k, v in features.items()}
        )
    else:
        try:
            arr = np.asarray(features, dtype=float)
        except (TypeError, ValueError) as e:
            raise TypeError(
                "features must be ParameterFeatures, a mapping name -> vector or a 2-D array "
                f"(one row per parameter), got {type(features).__name__}."
            ) from e
        if arr.ndim != 2:
            raise ValueError(
                f"A features array must be 2-D (one row per parameter), got shape {arr.shape}."
            )
        if arr.shape[0] != len(names):
            raise ValueError(
                f"The features array has {arr.shape[0]} rows but search_space has "
                f"{len(names)} parameters."
            )
        parsed = ParameterFeatures(vectors=dict(zip(names, arr, strict=True)))
    for part_name in ("samples", "vectors"):
        part = getattr(parsed, part_name)
        if part and set(part) != set(names):
            missing = sorted(set(names) - set(part))
            extra = sorted(set(part) - set(names))
            raise ValueError(
                f"features.{part_name} must have exactly the search_space names; "
                f"missing {missing}, unknown {extra}."
            )
    return parsed


def feature_arrays(
    feats: ParameterFeatures, distance: str, names: list[str]
) -> tuple[list[np.ndarray] | None, np.ndarray | None]:
    """``(samples, vectors)`` in ``names`` order for ``distance`` (the unused one is ``None``).

    Raises:
        ValueError: The part that ``distance`` needs is missing or not finite, or the vectors
            differ in length.
    """
    if distance in ("eu", "js"):
        if not feats.samples:
            raise ValueError(f"distance={distance!r} needs features.samples.")
        return [_finite_1d(feats.samples[n], f"features.samples[{n!r}]") for n in names], None
    if not feats.vectors:
        raise ValueError("distance='st' needs features.vectors (structural features).")
    rows = [_finite_1d(feats.vectors[n], f"features.vectors[{n!r}]") for n in names]
    if len({r.size for r in rows}) != 1:
        raise ValueError(
            f"features.vectors must all have the same length, got {[r.size for r in rows]}."
        )
    return None, np.stack(rows)


def _finite_1d(values: ArrayLike, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be a non-empty 1-D array of finite values, got {arr!r}.")
    return arr
