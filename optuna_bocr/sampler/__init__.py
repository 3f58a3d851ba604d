"""The sampler wing: BOCR as a generic Optuna sampler.

It knows float parameters, a feature vector (or a sample set) per parameter to cluster on,
and the trial history in the storage; nothing of :mod:`torch.nn` or of the pruning wing.
Private one-idea modules under the thin :class:`BOCRSampler` (``_sampler``):

- ``_proposal``: one trial's proposal (stage, observations, design or GP, claim);
- ``_history``: the trial history, read once per trial; ``_storage``: every storage key,
  read and write, and every use of Optuna's private API;
- ``_space``: one stage's clusters, bounds and coordinate conversions;
- ``_schedule``: when stages change; ``_clustering`` and ``_features``: the Ward tree;
- ``_gp`` (fit), ``_posterior`` and ``_acquisition`` (log-EI): the numerics, with
  ``_gpytorch_model`` as the GPyTorch reference definition of the GP.
"""

from __future__ import annotations

from optuna_bocr.sampler._features import ParameterFeatures
from optuna_bocr.sampler._sampler import BOCRSampler
from optuna_bocr.sampler._schedule import PAPER_SCHEDULE
from optuna_bocr.sampler._storage import stage_openings

__all__ = ["BOCRSampler", "PAPER_SCHEDULE", "ParameterFeatures", "stage_openings"]
