"""optuna-bocr: BOCR (Bayesian Optimization with Clustering and Rollback) on Optuna.

Two wings and a command line:

- :mod:`optuna_bocr.sampler`: :class:`BOCRSampler`, generic Optuna code (no ``torch.nn``).
- :mod:`optuna_bocr.pruning`, :mod:`optuna_bocr.models`, :mod:`optuna_bocr.data`,
  :mod:`optuna_bocr.training`: the CNN side (prune, evaluate, export).
- :mod:`optuna_bocr.cli`: the ``optuna-bocr`` command on top of both.

:mod:`optuna_bocr.keys` names the trial attributes where the two wings meet.
"""

from __future__ import annotations

from optuna_bocr.keys import ACTUAL_PARAMS_KEY
from optuna_bocr.sampler import BOCRSampler
from optuna_bocr.sampler import PAPER_SCHEDULE
from optuna_bocr.sampler import ParameterFeatures

__all__ = ["ACTUAL_PARAMS_KEY", "BOCRSampler", "PAPER_SCHEDULE", "ParameterFeatures"]
__version__ = "0.1.0"
