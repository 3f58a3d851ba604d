"""Channel pruning of CNNs as an Optuna objective (the environment of BOCR / AMC).

``PruningObjective`` turns an Optuna trial (one preserve ratio per prunable layer) into a
pruned network under a FLOPs budget and returns its validation accuracy; ``export`` builds
the physically smaller network, which ``save_pruned`` / ``load_pruned`` store.
``recalibrate_batchnorm`` re-estimates a pruned network's batch-norm statistics (the
objective's ``bn_recalibration``); ``fine_tune_top_k`` fine-tunes a study's best distinct
trials and ranks them on validation, ``record_fine_tuned`` stores the results on the study;
``rescore_top_k`` scores them again on validation images the search never saw, without
fine-tuning, and ``record_rescored`` stores those.
"""

from __future__ import annotations

from optuna_bocr.pruning._batchnorm import recalibrate_batchnorm
from optuna_bocr.pruning._export import load_pruned
from optuna_bocr.pruning._export import save_pruned
from optuna_bocr.pruning._finetune import fine_tune_top_k
from optuna_bocr.pruning._finetune import FineTuned
from optuna_bocr.pruning._finetune import record_fine_tuned
from optuna_bocr.pruning._flops import count_flops
from optuna_bocr.pruning._objective import PruningObjective
from optuna_bocr.pruning._rescore import record_rescored
from optuna_bocr.pruning._rescore import rescore_top_k
from optuna_bocr.pruning._rescore import Rescored
from optuna_bocr.pruning._sensitivity import layer_sensitivity
from optuna_bocr.pruning._sensitivity import LayerSensitivity

__all__ = [
    "FineTuned",
    "LayerSensitivity",
    "PruningObjective",
    "Rescored",
    "layer_sensitivity",
    "count_flops",
    "fine_tune_top_k",
    "load_pruned",
    "recalibrate_batchnorm",
    "record_fine_tuned",
    "record_rescored",
    "rescore_top_k",
    "save_pruned",
]
