"""The sampler wing: BOCR as a generic Optuna sampler.

It knows float parameters, a feature vector (or a sample set) per parameter to cluster on,
and the trial history in the storage; nothing of :mod:`torch.nn` or of the pruning wing.
The numerics live in private one-idea modules (``_gp``, ``_acquisition``, ``_clustering``,
``_schedule``), the thin :class:`BOCRSampler` on top.
"""

from __future__ import annotations

from optuna_bocr.sampler._features import ParameterFeatures
from optuna_bocr.sampler._sampler import BOCRSampler

__all__ = ["BOCRSampler", "ParameterFeatures"]
