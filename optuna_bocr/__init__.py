"""optuna-bocr: BOCR (Bayesian Optimization with Clustering and Rollback) on Optuna."""

from __future__ import annotations

from optuna_bocr._features import ParameterFeatures
from optuna_bocr._keys import ACTUAL_PARAMS_KEY
from optuna_bocr._sampler import BOCRSampler

__all__ = ["ACTUAL_PARAMS_KEY", "BOCRSampler", "ParameterFeatures"]
__version__ = "0.1.0"
