"""Ship the best fine-tuned candidate: fine-tune a study's top-k distinct trials, pick on val.

The search scores networks without fine-tuning; what ships is fine-tuned. The best trial
by the search score need not be the best after fine-tuning, so :func:`fine_tune_top_k`
fine-tunes the ``k`` best distinct trials the same short way and ranks them by validation
accuracy (never the test set). :func:`record_fine_tuned` stores the results on the study
(Optuna does not let finished trials be changed, so they go to one study user attr, keyed
by trial number).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from optuna.trial import TrialState
import torch
from torch import nn
from torch.utils.data import Dataset

from optuna_bocr.keys import ACTUAL_PARAMS_KEY
from optuna_bocr.keys import FINETUNED_KEY
from optuna_bocr.pruning._objective import PruningObjective
from optuna_bocr.training import evaluate
from optuna_bocr.training import train


@dataclass(frozen=True)
class FineTuned:
    """One fine-tuned candidate.

    Attributes:
        trial_number: The trial it was exported from.
        search_top1: The trial's value (validation top-1 (%) without fine-tuning).
        val_top1: Validation top-1 (%) after fine-tuning (what candidates are ranked by).
        model: The fine-tuned, physically pruned network (eval mode).
        seconds: Wall-clock seconds of the export, fine-tune and evaluation.
    """

    trial_number: int
    search_top1: float
    val_top1: float
    model: nn.Module
    seconds: float


def top_distinct_trials(
    trials: Sequence[FrozenTrial], objective: PruningObjective, k: int
) -> list[FrozenTrial]:
    """The ``k`` best complete trials (by value) that prune to different networks.

    Two trials are the same network when their actual ratios keep the same number of
    channels in every layer; the better-ranked (then earlier) one is kept.
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    complete.sort(key=lambda t: (-float(t.value), t.number))  # type: ignore[arg-type]
    chosen: list[FrozenTrial] = []
    seen: set[tuple[int, ...]] = set()
    for trial in complete:
        ratios = trial.user_attrs.get(ACTUAL_PARAMS_KEY, trial.params)
        key = tuple(len(v) for v in objective.kept_channels(ratios).values())
        if key in seen:
            continue
        seen.add(key)
        chosen.append(trial)
        if len(chosen) == k:
            break
    return chosen


def fine_tune_top_k(
    trials: Sequence[FrozenTrial] | optuna.Study,
    objective: PruningObjective,
    train_data: Dataset,
    validation: Dataset,
    *,
    k: int = 3,
    epochs: float = 1.0,
    max_images: int | None = 10000,
    lr: float = 0.01,
    batch_size: int = 128,
    augment: bool = True,
    freeze_bn: bool = False,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool = False,
) -> list[FineTuned]:
    """Fine-tune the ``k`` best distinct trials the same short way; best on validation first.

    Each trial is exported (:meth:`PruningObjective.export`) and fine-tuned with
    :func:`optuna_bocr.training.train` (the same seed and settings for every candidate),
    then scored on ``validation``.

    Args:
        trials: The study, or its trials.
        objective: The objective of the study (same model, budget and settings).
        train_data: Training images for the fine-tune (never the validation images).
        validation: The validation split the candidates are ranked on.
        k: How many distinct trials to fine-tune.
        epochs: Fine-tune epochs (over ``max_images`` images per epoch).
        max_images: Images per fine-tune epoch (``None``: all).
        lr: Initial fine-tune learning rate (cosine to 0).
        batch_size: Images per fine-tune step.
        augment: Random translations and flips during the fine-tune.
        freeze_bn: Keep the batch-norm statistics fixed during the fine-tune.
        device: Where to fine-tune (``"auto"``: CUDA if available).
        seed: Seed of the fine-tune's data order and augmentation.
        progress: Show a progress bar per fine-tune.

    Returns:
        All fine-tuned candidates (up to ``k``: fewer when the study has fewer distinct
        complete trials), sorted by fine-tuned validation top-1, best first (ties: the
        better search score first).

    Raises:
        ValueError: ``k`` is not a positive integer, or no trial is complete.
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if not epochs > 0:
        raise ValueError(f"epochs must be positive, got {epochs!r}.")
    if isinstance(trials, optuna.Study):
        trials = trials.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    chosen = top_distinct_trials(trials, objective, int(k))
    if not chosen:
        raise ValueError("The study has no complete trial to fine-tune: run the search first.")
    results = []
    for rank, trial in enumerate(chosen):
        started = time.perf_counter()
        model = objective.export(trial)
        train(
            model,
            train_data,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            augment=augment,
            freeze_bn=freeze_bn,
            device=device,
            seed=seed,
            max_images=max_images,
            progress=progress,
        )
        val_top1, _ = evaluate(model, validation, device=device)
        results.append(
            (
                -val_top1,
                rank,
                FineTuned(
                    trial_number=trial.number,
                    search_top1=float(trial.value),  # type: ignore[arg-type]
                    val_top1=val_top1,
                    model=model.eval(),
                    seconds=time.perf_counter() - started,
                ),
            )
        )
    results.sort(key=lambda r: (r[0], r[1]))
    return [r[2] for r in results]


def record_fine_tuned(
    study: optuna.Study,
    results: Sequence[FineTuned],
    *,
    settings: dict[str, Any] | None = None,
    test_top1: dict[int, float] | None = None,
) -> None:
    """Store fine-tuned accuracies on the study (user attr ``FINETUNED_KEY``).

    The attr maps ``str(trial number)`` to ``{"val_top1", "search_top1"}`` (plus
    ``"test_top1"`` when given, and the fine-tune ``settings``); earlier entries of other
    trials are kept.
    """
    table: dict[str, Any] = dict(study.user_attrs.get(FINETUNED_KEY, {}))
    for r in results:
        entry: dict[str, Any] = {"val_top1": r.val_top1, "search_top1": r.search_top1}
        if test_top1 is not None and r.trial_number in test_top1:
            entry["test_top1"] = float(test_top1[r.trial_number])
        if settings:
            entry["settings"] = dict(settings)
        table[str(r.trial_number)] = entry
    study.set_user_attr(FINETUNED_KEY, table)
