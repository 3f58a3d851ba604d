"""Batch-norm recalibration and plain masking in PruningObjective (real model, real data)."""

from __future__ import annotations

import copy

import numpy as np
import optuna
import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from optuna_bocr.keys import ACTUAL_PARAMS_KEY
from optuna_bocr.keys import TOP1_KEY
from optuna_bocr.keys import TOP5_KEY
from optuna_bocr.pruning import PruningObjective
from optuna_bocr.pruning import recalibrate_batchnorm
from optuna_bocr.training import evaluate

optuna.logging.set_verbosity(optuna.logging.WARNING)

_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _objective(model: nn.Module, splits, **overrides) -> PruningObjective:  # noqa: ANN001, ANN003
    kwargs = {
        "calibration": Subset(splits.train, range(2000, 4000)),
        "validation": Subset(splits.val, range(300)),
        "flops_ratio": 0.5,
        "n_calibration_images": 200,
        "eval_batch_size": 150,
        "bn_recalibration": 4,
        "bn_batch_size": 32,
        "device": "cpu",
        **overrides,
    }
    return PruningObjective(model, **kwargs)


@pytest.fixture(scope="module")
def recalibrating(trained_resnet20, fashion_splits) -> PruningObjective:  # noqa: ANN001
    return _objective(trained_resnet20, fashion_splits)


def _ratios(objective: PruningObjective, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {n: float(rng.uniform(objective.lbound, 1.0)) for n in objective.search_space}


def _is_bn_buffer(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in _BN_BUFFERS


def test_recalibration_changes_only_running_statistics(trained_resnet20, fashion_splits) -> None:  # noqa: ANN001
    model = copy.deepcopy(trained_resnet20).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = fashion_splits.train.tensors(range(128))[0]
    momenta = [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert recalibrate_batchnorm(model, images, batch_size=32) is model
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(_is_bn_buffer(k) for k in changed)
    assert any(k.endswith("running_var") for k in changed)
    # Modes and momenta are restored; the statistics are the mean over the images.
    assert not any(m.training for m in model.modules())
    assert momenta == [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert int(model.bn1.num_batches_tracked) == 4
    with torch.no_grad():
        features = model.conv1(images)
    torch.testing.assert_close(model.bn1.running_mean, features.mean(dim=(0, 2, 3)))


def test_exported_networks_differ_only_in_statistics(
    recalibrating: PruningObjective,
    trained_resnet20,  # noqa: ANN001
    fashion_splits,  # noqa: ANN001
) -> None:
    plain = _objective(trained_resnet20, fashion_splits, bn_recalibration=0)
    ratios = _ratios(plain, 0)
    a = plain.export(ratios).state_dict()
    b = recalibrating.export(ratios).state_dict()
    assert a.keys() == b.keys()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and all(_is_bn_buffer(k) for k in changed)
    # Only the running statistics of the evaluated network change: the objective's own
    # network is back to the checkpoint after a masked (full-size) evaluation too.
    masked = _objective(trained_resnet20, fashion_splits, evaluate_pruned=False)
    reference = {k: v.clone() for k, v in masked._model.state_dict().items()}
    result = masked.evaluate(ratios)
    for key, value in masked._model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    pruned_result = recalibrating.evaluate(ratios)
    assert result[ACTUAL_PARAMS_KEY] == pruned_result[ACTUAL_PARAMS_KEY]
    assert abs(result[TOP1_KEY] - pruned_result[TOP1_KEY]) <= 1.0  # 300 images: rounding


def test_recalibration_is_deterministic_for_a_seed(
    recalibrating: PruningObjective,
    trained_resnet20,  # noqa: ANN001
    fashion_splits,  # noqa: ANN001
) -> None:
    ratios = _ratios(recalibrating, 1)
    first = recalibrating.export(ratios).state_dict()
    again = _objective(trained_resnet20, fashion_splits).export(ratios).state_dict()
    for key, value in first.items():
        assert torch.equal(value, again[key]), key
    # Another seed draws other calibration images, so other statistics.
    other = _objective(trained_resnet20, fashion_splits, seed=1).export(ratios).state_dict()
    assert not torch.equal(first["bn1.running_mean"], other["bn1.running_mean"])


def test_trial_with_recalibration_is_reproducible(
    recalibrating: PruningObjective,
    trained_resnet20,  # noqa: ANN001
    fashion_splits,  # noqa: ANN001
) -> None:
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    study.optimize(recalibrating, n_trials=3)
    assert len({t.value for t in study.trials}) > 1
    fresh = _objective(trained_resnet20, fashion_splits)
    for trial in study.trials:
        assert recalibrating.evaluate(trial.params)[TOP1_KEY] == trial.value
        assert fresh.evaluate(trial.params)[TOP1_KEY] == trial.value
        assert trial.user_attrs[TOP5_KEY] >= trial.value


def test_plain_masking_keeps_the_kept_weights(trained_resnet20, fashion_splits) -> None:  # noqa: ANN001
    plain = _objective(trained_resnet20, fashion_splits, reconstruction=False, bn_recalibration=0)
    ratios = plain.clip(_ratios(plain, 2))
    originals = dict(plain._model.named_modules())
    for name, weight in plain.masked_weights(ratios).items():
        kept = plain.kept_channels(ratios)[name]
        original = originals[name].weight
        assert torch.equal(weight[:, kept], original[:, kept])
        assert weight.abs().sum() < original.abs().sum()
    reconstructed = _objective(trained_resnet20, fashion_splits, bn_recalibration=0)
    assert plain.evaluate(ratios)[TOP1_KEY] != reconstructed.evaluate(ratios)[TOP1_KEY]


def test_bad_recalibration_arguments(trained_resnet20, fashion_splits) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=r"bn_recalibration must be >= 0") as info:
        _objective(trained_resnet20, fashion_splits, bn_recalibration=-1)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="whole number"):
        _objective(trained_resnet20, fashion_splits, bn_recalibration=1.5)
    with pytest.raises(ValueError, match="bn_batch_size"):
        _objective(trained_resnet20, fashion_splits, bn_batch_size=0)
    with pytest.raises(ValueError, match="need 4000 calibration images"):
        _objective(trained_resnet20, fashion_splits, bn_recalibration=40, bn_batch_size=100)
    no_bn = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    with pytest.raises(ValueError, match="the model has none: pass bn_recalibration=0") as info:
        _objective(no_bn, fashion_splits)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="no batch-norm layer"):
        recalibrate_batchnorm(no_bn, torch.zeros(4, 1, 8, 8), batch_size=2)


def test_objective_and_evaluate_count_alike(
    recalibrating: PruningObjective,
    trained_resnet20,  # noqa: ANN001
    fashion_splits,  # noqa: ANN001
) -> None:
    """One evaluation loop: the objective's baseline is what ``evaluate`` measures."""
    top1, _ = evaluate(copy.deepcopy(trained_resnet20), Subset(fashion_splits.val, range(300)))
    assert recalibrating.baseline_top1 == top1
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            _objective(trained_resnet20, fashion_splits, device="cuda")
