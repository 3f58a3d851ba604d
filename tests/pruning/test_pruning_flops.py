"""FLOPs counting and the budget rule (random weights; no data needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
import torchvision

from optuna_bocr import models
from optuna_bocr.pruning import count_flops
from optuna_bocr.pruning._flops import BudgetModel
from optuna_bocr.pruning._flops import keep_count
from optuna_bocr.pruning._graph import find_prunable_layers
from optuna_bocr.pruning._graph import measure_layers


def _budget(model: nn.Module, size: int) -> BudgetModel:
    model.eval()
    x = torch.randn(1, 3, size, size)
    infos = measure_layers(model, x)
    layers = find_prunable_layers(model, x, list(infos))
    affine = {n: m.affine for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    return BudgetModel(infos, layers, affine, sum(p.numel() for p in model.parameters()))


def test_known_values() -> None:
    # The numbers quoted by the papers (multiply-accumulates).
    assert count_flops(models.resnet56(), (3, 32, 32)) == pytest.approx(125.5e6, rel=0.01)
    assert count_flops(models.resnet20(), (3, 32, 32)) == pytest.approx(40.8e6, rel=0.01)
    assert count_flops(torchvision.models.resnet18(), (3, 224, 224)) == pytest.approx(
        1.82e9, rel=0.01
    )
    assert count_flops(models.mobilenet_v1(), (1, 3, 32, 32)) > 0


def test_exact_small_model() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # 8*8 * 9 * 4 * 1
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4),  # 4*4 * 9 * 4 * 1
        nn.Conv2d(4, 6, 1),  # 4*4 * 6 * 4
        nn.Flatten(),
        nn.Linear(96, 10),  # 960
    )
    model.train()
    assert count_flops(model, (1, 8, 8)) == 2304 + 576 + 384 + 960
    assert model.training  # mode restored


def test_input_size_errors() -> None:
    with pytest.raises(ValueError, match="input_size"):
        count_flops(models.resnet20(), (32, 32))
    with pytest.raises(ValueError, match="input_size"):
        count_flops(models.resnet20(), (3, 0, 32))


def test_keep_count() -> None:
    assert keep_count(16, 0.1) == 2  # 1.6 -> 2
    assert keep_count(10, 0.05) == 1  # never zero
    assert keep_count(16, 0.5) == 8
    assert keep_count(10, 0.25) == 3  # half up
    assert keep_count(64, 1.0) == 64


@pytest.mark.parametrize(
    ("name", "factory", "size", "target", "lbound"),
    [
        ("resnet56", models.resnet56, 32, 0.5, 0.1),
        ("mobilenet_v1", models.mobilenet_v1, 32, 0.5, 0.2),
        ("resnet50", lambda: torchvision.models.resnet50(weights=None), 64, 0.6, 0.1),
        ("mobilenet_v2", lambda: torchvision.models.mobilenet_v2(weights=None), 64, 0.7, 0.2),
    ],
)
def test_clip_meets_the_budget(
    name: str, factory, size: int, target: float, lbound: float
) -> None:  # noqa: ANN001
    budget = _budget(factory(), size)
    names = [layer.name for layer in budget._layers]
    limit = target * budget.original_flops
    rng = np.random.default_rng(0)
    used = []
    for i in range(200):
        # Uniform vectors, vectors near the bounds, and all-ones.
        if i == 0:
            ratios = dict.fromkeys(names, 1.0)
        elif i % 3 == 0:
            ratios = {n: float(rng.choice([lbound, 1.0])) for n in names}
        else:
            ratios = {n: float(rng.uniform(lbound, 1.0)) for n in names}
        actual = budget.clip(ratios, target=limit, lbound=lbound)
        assert list(actual) == names
        assert all(lbound <= actual[n] <= ratios[n] for n in names)
        flops = budget.flops(budget.keep(actual))
        assert flops <= limit, (name, i)
        used.append(flops / budget.original_flops)
        assert budget.clip(actual, target=limit, lbound=lbound) == actual
    # The rule clips only what it must: an all-ones proposal uses nearly all the budget.
    assert used[0] > target - 0.02


def test_loose_budget_clips_nothing() -> None:
    budget = _budget(models.resnet20(), 32)
    rng = np.random.default_rng(1)
    ratios = {layer.name: float(rng.uniform(0.1, 1.0)) for layer in budget._layers}
    assert budget.clip(ratios, target=budget.original_flops, lbound=0.1) == ratios


def test_min_flops_and_params() -> None:
    budget = _budget(models.resnet56(), 32)
    names = [layer.name for layer in budget._layers]
    assert budget.flops(budget.keep(dict.fromkeys(names, 1.0))) == budget.original_flops
    assert budget.params(budget.keep(dict.fromkeys(names, 1.0))) == budget.original_params
    # At lbound 0.1 both convs of every block shrink ~8x (16 -> 2, 32 -> 3, 64 -> 6 inner
    # channels); only the stem and the classifier stay: about 11% of the FLOPs remain.
    assert 0.09 < budget.min_flops(0.1) / budget.original_flops < 0.13
    half = budget.keep(dict.fromkeys(names, 0.5))
    assert budget.params(half) < budget.original_params


@pytest.mark.parametrize(
    ("name", "factory", "size", "target", "lbound", "rbound"),
    [
        ("resnet56", models.resnet56, 32, 0.5, 0.1, 1.0),
        ("mobilenet_v1", models.mobilenet_v1, 32, 0.25, 0.2, 1.0),
        ("resnet50", lambda: torchvision.models.resnet50(weights=None), 64, 0.6, 0.1, 0.9),
    ],
)
def test_scale_meets_the_budget_keeps_proportions_and_is_a_fixed_point(
    name: str, factory, size: int, target: float, lbound: float, rbound: float
) -> None:  # noqa: ANN001
    budget = _budget(factory(), size)
    layers = budget._layers
    names = [layer.name for layer in layers]
    limit = target * budget.original_flops
    rng = np.random.default_rng(0)
    for i in range(30):
        ratios = {n: float(rng.uniform(lbound, rbound)) for n in names}
        if i == 0:
            ratios = dict.fromkeys(names, lbound)  # under the budget: grows
        actual = budget.scale(ratios, target=limit, lbound=lbound, rbound=rbound)
        assert list(actual) == names
        assert all(lbound <= actual[n] <= rbound for n in names)
        flops = budget.flops(budget.keep(actual))
        assert flops <= limit, (name, i)
        # Nearly the whole budget is used (the factor is the largest that fits).
        assert flops > 0.97 * limit, (name, i, flops / limit)
        # The proportions stay: every layer off its bounds got the same factor.
        factors = [actual[n] / ratios[n] for n in names if lbound < actual[n] < rbound]
        assert factors
        assert max(factors) == pytest.approx(min(factors), rel=1e-9)
        assert budget.scale(actual, target=limit, lbound=lbound, rbound=rbound) == actual


def test_scale_with_a_loose_budget_keeps_everything_up_to_rbound() -> None:
    budget = _budget(models.resnet20(), 32)
    rng = np.random.default_rng(1)
    ratios = {layer.name: float(rng.uniform(0.1, 0.9)) for layer in budget._layers}
    actual = budget.scale(ratios, target=budget.original_flops, lbound=0.1, rbound=0.9)
    assert set(actual.values()) <= {
        keep_count(layer.channels, 0.9) / layer.channels for layer in budget._layers
    } | {0.9}


def test_the_command_line_offers_exactly_the_objectives_budget_rules() -> None:
    from optuna_bocr.cli._common import BUDGET_RULES as CLI_RULES
    from optuna_bocr.cli._common import DEFAULT_BUDGET_RULE
    from optuna_bocr.pruning._inputs import BUDGET_RULES

    assert CLI_RULES == BUDGET_RULES and DEFAULT_BUDGET_RULE in BUDGET_RULES
