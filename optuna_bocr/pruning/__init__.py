"""Channel pruning of CNNs as an Optuna objective (the environment of BOCR / AMC).

``PruningObjective`` turns an Optuna trial (one preserve ratio per prunable layer) into a
pruned network under a FLOPs budget and returns its validation accuracy; ``export`` builds
the physically smaller network, which ``save_pruned`` / ``load_pruned`` store.
"""

from __future__ import annotations

from optuna_bocr.pruning._export import load_pruned
from optuna_bocr.pruning._export import save_pruned
from optuna_bocr.pruning._flops import count_flops
from optuna_bocr.pruning._objective import PruningObjective

__all__ = ["PruningObjective", "count_flops", "load_pruned", "save_pruned"]
