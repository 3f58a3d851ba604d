"""Per-parameter features that :class:`~optuna_bocr.BOCRSampler` clusters on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

import numpy as np


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
