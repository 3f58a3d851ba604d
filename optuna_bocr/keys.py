"""Names of the trial attributes that the sampler and the pruning objective share.

These are the whole seam between :class:`~optuna_bocr.BOCRSampler` and
:mod:`optuna_bocr.pruning`: the objective records what it really evaluated under these
user-attr keys, the sampler reads them back from storage, and optuna-dashboard shows them.
Every key of the package is defined here and nowhere else: the objective's and the
sampler's trial attrs, the command line's study config and the benchmarks' checkpoint
fingerprint.
"""

from __future__ import annotations

# -- Written by the objective (user attrs) ---------------------------------------------------

ACTUAL_PARAMS_KEY = "actual_params"
"""User attr: ``dict[str, float]`` of the per-parameter values that were really evaluated.

The pruning objective moves the proposed ratios to meet the FLOPs budget (its budget rule);
the actual ratios are stored here. :class:`~optuna_bocr.BOCRSampler` with
``observe_actual=True`` maps every trial into its current search space from these values when
present (and from ``trial.params`` otherwise); by default it observes ``trial.params``. The
exported model and the dashboard use them. Any objective may write it.
"""

FLOPS_RATIO_KEY = "flops_ratio"
"""User attr: FLOPs (multiply-accumulates) of the pruned model / FLOPs of the original."""

PARAMS_RATIO_KEY = "params_ratio"
"""User attr: parameter count of the pruned model / parameter count of the original."""

TOP1_KEY = "top1"
"""User attr: top-1 accuracy (%) on the validation split."""

TOP5_KEY = "top5"
"""User attr: top-5 accuracy (%) on the validation split (100 for 5 classes or fewer)."""

EVAL_SECONDS_KEY = "eval_seconds"
"""User attr: wall-clock seconds spent pruning and evaluating the trial."""

# -- Written by the sampler (user attrs, for people and the dashboard) ------------------------

STAGE_KEY = "bocr:stage"
"""User attr: index of the BOCR stage (0 = first clustering, last = one value per parameter)."""

N_CLUSTERS_KEY = "bocr:n_clusters"
"""User attr: number of search variables (clusters) in the trial's stage."""

CLUSTER_VALUES_KEY = "bocr:cluster_values"
"""User attr: ``list[float]``, the value proposed for each cluster of the trial's stage."""

# -- Written by the sampler (system attrs, for the sampler itself) ----------------------------

SYSTEM_ATTR_PREFIX = "bocr:"
"""Prefix of every system attr that :class:`~optuna_bocr.BOCRSampler` writes."""


# -- Written by the command line and the benchmarks (study user attrs) -------------------------

STUDY_CONFIG_KEY = "optuna_bocr:config"
"""Study user attr: the settings a ``optuna-bocr prune`` study was created with (model,
dataset, FLOPs target, sampler, ...); ``export`` and resuming read them back."""

FINETUNED_KEY = "optuna_bocr:finetuned"
"""Study user attr: fine-tuned accuracies of the top trials (``optuna-bocr export
--top-k``), ``{str(trial number): {"val_top1", "search_top1", "test_top1"?, "settings"?}}``
(finished trials cannot take new user attrs in Optuna, so they are kept on the study)."""

RESCORED_KEY = "optuna_bocr:rescored"
"""Study user attr: the top trials' top-1 on validation images the search never scored
(``optuna-bocr export --top-k`` without fine-tuning), ``{str(trial number): {"rescore_top1",
"search_top1", "n_images", "test_top1"?}}``."""

CHECKPOINT_SHA256_KEY = "checkpoint_sha256"
"""Study user attr: SHA-256 over the tensors of the checkpoint that the study prunes."""

BOCR_STRUCTURE_KEY = "bocr:structure"
"""Study user attr written with the dashboard note (``optuna_bocr.cli._note``): the BOCR
layout of the study, ``{"stage_sizes": [...], "clusters": [[[names], ...], ...],
"structure_pvalue": float | None}``; ``export`` colours its ratio plot by it."""
