"""Physical export, saving / loading, and an end-to-end study on SQLite (real data)."""

from __future__ import annotations

from collections.abc import Callable
import json
import os
import subprocess
import sys

import numpy as np
import optuna
import pytest
import torch
from torch import nn
from torch.utils.data import Subset
from torch.utils.data import TensorDataset
import torchvision

import optuna_bocr
from optuna_bocr.keys import ACTUAL_PARAMS_KEY
from optuna_bocr.keys import EVAL_SECONDS_KEY
from optuna_bocr.keys import FLOPS_RATIO_KEY
from optuna_bocr.keys import PARAMS_RATIO_KEY
from optuna_bocr.keys import TOP1_KEY
from optuna_bocr.keys import TOP5_KEY
from optuna_bocr.models import mobilenet_v1
from optuna_bocr.models import resnet20
from optuna_bocr.pruning import count_flops
from optuna_bocr.pruning import load_pruned
from optuna_bocr.pruning import PruningObjective
from optuna_bocr.pruning import save_pruned

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def splits(fashion_splits):  # noqa: ANN001, ANN201
    return fashion_splits


def _rgb(dataset: torch.utils.data.Dataset, n: int, offset: int = 0) -> TensorDataset:
    """Real Fashion-MNIST images as 3-channel tensors, for 3-channel models."""
    x, y = zip(*(dataset[i] for i in range(offset, offset + n)), strict=True)
    return TensorDataset(torch.stack(x).repeat(1, 3, 1, 1), torch.tensor(y))


def _sequential() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, stride=2),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def _check_export(objective: PruningObjective, x: torch.Tensor, seed: int) -> nn.Module:
    rng = np.random.default_rng(seed)
    ratios = {
        name: float(rng.uniform(objective.lbound, objective.rbound))
        for name in objective.search_space
    }
    actual = objective.clip(ratios)
    exported = objective.export(actual)
    with objective.masked(actual) as masked, torch.no_grad():
        reference = masked(x)
    with torch.no_grad():
        out = exported(x)
    scale = max(1.0, float(reference.abs().max()))
    assert float((out - reference).abs().max()) <= 1e-4 * scale
    assert (out.argmax(1) == reference.argmax(1)).float().mean() >= 0.99
    flops = count_flops(exported, objective.input_size)
    assert flops == objective.predicted_flops(actual)
    assert flops <= objective.flops_ratio * objective.original_flops
    assert flops < count_flops(objective._model, objective.input_size)
    result = objective.evaluate(actual)
    n_params = sum(p.numel() for p in exported.parameters())
    assert n_params == round(result[PARAMS_RATIO_KEY] * objective.original_params)
    modules = dict(exported.named_modules())
    for name, kept in objective.kept_channels(actual).items():
        assert modules[name].in_channels == len(kept) == modules[name].weight.shape[1]
    assert exported is not objective._model
    return exported


@pytest.mark.parametrize(
    ("name", "factory", "lbound"),
    [
        ("resnet20", resnet20, 0.1),
        ("mobilenet_v1", lambda: mobilenet_v1(width_mult=0.5), 0.2),
        ("resnet18", lambda: torchvision.models.resnet18(weights=None, num_classes=10), 0.1),
        ("resnet50", lambda: torchvision.models.resnet50(weights=None, num_classes=10), 0.1),
        ("mobilenet_v2", lambda: torchvision.models.mobilenet_v2(num_classes=10), 0.2),
        ("vgg11_bn", lambda: torchvision.models.vgg11_bn(weights=None, num_classes=10), 0.1),
        ("sequential", _sequential, 0.1),
    ],
)
def test_export_every_family(
    name: str,
    factory: Callable[[], nn.Module],
    lbound: float,
    splits,  # noqa: ANN001
) -> None:
    torch.manual_seed(0)
    model = factory().eval()
    flops_ratio = 0.7 if name.startswith("mobilenet") else 0.6
    objective = PruningObjective(
        model,
        calibration=_rgb(splits.train, 64),
        validation=_rgb(splits.val, 64),
        flops_ratio=flops_ratio,
        lbound=lbound,
        n_calibration_images=64,
        points_per_layer=5,
        device="cpu",
    )
    x = _rgb(splits.val, 32, offset=100).tensors[0]
    _check_export(objective, x, seed=0)


@pytest.fixture(scope="module")
def objective(splits, trained_resnet20):  # noqa: ANN001, ANN201
    return PruningObjective(
        trained_resnet20,
        calibration=Subset(splits.train, range(2000, 2500)),
        validation=Subset(splits.val, range(500)),
        flops_ratio=0.5,
        n_calibration_images=500,
        eval_batch_size=250,
        device="cpu",
    )


def test_save_and_load(objective: PruningObjective, splits, tmp_path) -> None:  # noqa: ANN001
    x = torch.stack([splits.val[i][0] for i in range(600, 632)])
    exported = _check_export(objective, x, seed=1)
    path = tmp_path / "pruned.pt"
    save_pruned(exported, path, metadata={"flops": 0.5, "layers": ["a"]})
    loaded, metadata = load_pruned(path)
    assert metadata == {"flops": 0.5, "layers": ["a"]}
    assert not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), exported(x), rtol=0, atol=0)
    # A fresh interpreter loads it with nothing but this package imported.
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch; from optuna_bocr.pruning import load_pruned, count_flops; "
        "m, meta = load_pruned(sys.argv[1]); x = torch.load(sys.argv[2]); "
        "torch.save(m(x).detach(), sys.argv[3]); print(count_flops(m, (1, 32, 32)))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert int(done.stdout.split()[-1]) == count_flops(exported, (1, 32, 32))
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "y.pt"), exported(x))


def test_load_errors(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a file written by save_pruned"):
        load_pruned(path)
    with pytest.raises(TypeError, match="nn.Module"):
        save_pruned("model", tmp_path / "x.pt")  # type: ignore[arg-type]


@pytest.mark.parametrize("sampler_name", ["random", "bocr"])
def test_study_on_sqlite(objective: PruningObjective, sampler_name: str, tmp_path) -> None:  # noqa: ANN001
    if sampler_name == "bocr":
        if not hasattr(optuna_bocr, "BOCRSampler"):
            pytest.skip("optuna_bocr.BOCRSampler is not available yet")
        sampler = optuna_bocr.BOCRSampler(
            objective.search_space, features=objective.layer_features(), n_clusters=3, seed=0
        )
    else:
        sampler = optuna.samplers.RandomSampler(seed=0)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(
        direction="maximize", sampler=sampler, storage=storage, study_name="e2e"
    )
    study.optimize(objective, n_trials=3)
    # Read everything back from the database, as the sampler and the dashboard do.
    loaded = optuna.load_study(study_name="e2e", storage=storage)
    trials = loaded.get_trials(deepcopy=False)
    assert len(trials) == 3
    for trial in trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        attrs = trial.user_attrs
        json.dumps(attrs)
        assert attrs[FLOPS_RATIO_KEY] <= 0.5
        assert attrs[ACTUAL_PARAMS_KEY] == objective.clip(trial.params)
        assert set(attrs) >= {
            ACTUAL_PARAMS_KEY,
            FLOPS_RATIO_KEY,
            PARAMS_RATIO_KEY,
            TOP1_KEY,
            TOP5_KEY,
            EVAL_SECONDS_KEY,
        }
        assert trial.value == attrs[TOP1_KEY]
    best = loaded.best_trial
    assert best.value > 20.0  # chance is 10%
    exported = objective.export(best)
    images, labels = objective._val_x, objective._val_y
    with torch.no_grad():
        accuracy = 100.0 * float((exported(images).argmax(1) == labels).float().mean())
    assert accuracy == pytest.approx(best.value, abs=0.5)
