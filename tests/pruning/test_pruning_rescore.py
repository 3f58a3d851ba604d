"""Re-scoring a study's top-k distinct trials on fresh validation images (real storage)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from torch.utils.data import Subset

from optuna_bocr.keys import RESCORED_KEY
from optuna_bocr.pruning import PruningObjective
from optuna_bocr.pruning import record_rescored
from optuna_bocr.pruning import rescore_top_k
from optuna_bocr.training import evaluate

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_rescore_top_k_ranks_the_best_trials_on_fresh_images(
    trained_resnet20,  # noqa: ANN001
    fashion_splits,  # noqa: ANN001
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    search = Subset(fashion_splits.val, range(100))
    fresh = Subset(fashion_splits.val, range(100, 400))
    objective = PruningObjective(
        trained_resnet20,
        calibration=Subset(fashion_splits.train, range(2000, 3000)),
        validation=search,
        n_calibration_images=100,
        device="cpu",
    )
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(
        direction="maximize", storage=storage, study_name="s",
        sampler=optuna.samplers.RandomSampler(seed=1),
    )  # fmt: skip
    study.optimize(objective, n_trials=4)
    best = study.best_trial
    study.enqueue_trial(best.params)  # the same network again: scored once
    study.optimize(objective, n_trials=1)

    results = rescore_top_k(study, objective, fresh, k=4, device="cpu", progress=True)
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert sorted(r.trial_number for r in results) == [t.number for t in study.trials[:4]]
    scores = [r.rescore_top1 for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results:
        assert r.search_top1 == study.trials[r.trial_number].value
        # Each score is the exported network's top-1 on the fresh images, not the search's.
        assert r.rescore_top1 == evaluate(r.model, fresh, device="cpu")[0]
        assert r.seconds > 0
    assert {r.rescore_top1 for r in results} != {r.search_top1 for r in results}
    # k=1 is the best observation.
    assert rescore_top_k(study, objective, fresh, k=1, device="cpu")[0].trial_number == best.number

    record_rescored(
        study, results[:2], n_images=len(fresh), test_top1={results[0].trial_number: 50.0}
    )
    stored = optuna.load_study(study_name="s", storage=storage).user_attrs[RESCORED_KEY]
    assert set(stored) == {str(r.trial_number) for r in results[:2]}
    first = stored[str(results[0].trial_number)]
    assert first["test_top1"] == 50.0 and first["n_images"] == 300
    assert first["rescore_top1"] == results[0].rescore_top1
    assert "test_top1" not in stored[str(results[1].trial_number)]

    with pytest.raises(ValueError, match="k must be a positive integer"):
        rescore_top_k(study, objective, fresh, k=0)
    with pytest.raises(ValueError, match="No fresh images"):
        rescore_top_k(study, objective, Subset(fresh, []), k=2)
    with pytest.raises(ValueError, match="no complete trial"):
        rescore_top_k(optuna.create_study(direction="maximize"), objective, fresh, k=2)
