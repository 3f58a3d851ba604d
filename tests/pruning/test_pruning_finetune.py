"""Fine-tuning a study's top-k distinct trials and choosing on validation (real storage)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from torch.utils.data import Subset

from optuna_bocr.keys import FINETUNED_KEY
from optuna_bocr.pruning import fine_tune_top_k
from optuna_bocr.pruning import PruningObjective
from optuna_bocr.pruning import record_fine_tuned
from optuna_bocr.training import evaluate

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_fine_tune_top_k(trained_resnet20, fashion_splits, tmp_path: Path) -> None:  # noqa: ANN001
    validation = Subset(fashion_splits.val, range(200))
    objective = PruningObjective(
        trained_resnet20,
        calibration=Subset(fashion_splits.train, range(2000, 3000)),
        validation=validation,
        n_calibration_images=100,
        device="cpu",
    )
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(
        direction="maximize",
        storage=storage,
        study_name="s",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.optimize(objective, n_trials=3)
    best = study.best_trial
    study.enqueue_trial(best.params)  # the same network again: not fine-tuned twice
    study.optimize(objective, n_trials=1)
    assert study.trials[-1].value == best.value

    train = fashion_splits.train.subset(range(4000, 4256))
    results = fine_tune_top_k(
        study, objective, train, validation, k=3, max_images=128, device="cpu"
    )
    numbers = [r.trial_number for r in results]
    assert sorted(numbers) == [t.number for t in study.trials[:3]]  # 3 distinct, no copy
    assert [r.val_top1 for r in results] == sorted((r.val_top1 for r in results), reverse=True)
    for r in results:
        assert r.search_top1 == study.trials[r.trial_number].value
        assert evaluate(r.model, validation, device="cpu")[0] == r.val_top1
        assert r.seconds > 0
    # The same short way: fine-tuning again gives the same numbers.
    again = fine_tune_top_k(study, objective, train, validation, k=1, max_images=128, device="cpu")
    assert again[0].trial_number == best.number
    assert again[0].val_top1 == next(r.val_top1 for r in results if r.trial_number == best.number)

    record_fine_tuned(study, results, settings={"epochs": 1}, test_top1={numbers[0]: 50.0})
    stored = optuna.load_study(study_name="s", storage=storage).user_attrs[FINETUNED_KEY]
    assert set(stored) == {str(n) for n in numbers}
    assert stored[str(numbers[0])]["test_top1"] == 50.0
    assert stored[str(numbers[1])]["val_top1"] == results[1].val_top1

    with pytest.raises(ValueError, match="k must be a positive integer"):
        fine_tune_top_k(study, objective, train, validation, k=0)
    empty = optuna.create_study(direction="maximize")
    with pytest.raises(ValueError, match="no complete trial"):
        fine_tune_top_k(empty, objective, train, validation, k=1)
