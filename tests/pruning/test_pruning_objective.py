"""PruningObjective on real Fashion-MNIST data: budget, reconstruction, trials, errors."""

from __future__ import annotations

import copy
import math

import numpy as np
import optuna
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Subset
from torch.utils.data import TensorDataset

from optuna_bocr import ParameterFeatures
from optuna_bocr.keys import ACTUAL_PARAMS_KEY
from optuna_bocr.keys import EVAL_SECONDS_KEY
from optuna_bocr.keys import FLOPS_RATIO_KEY
from optuna_bocr.keys import PARAMS_RATIO_KEY
from optuna_bocr.keys import TOP1_KEY
from optuna_bocr.keys import TOP5_KEY
from optuna_bocr.models import resnet20
from optuna_bocr.pruning import PruningObjective

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def splits(fashion_splits):  # noqa: ANN001, ANN201
    return fashion_splits


def _small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, stride=2, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, stride=2),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


@pytest.fixture(scope="module")
def trained_resnet(trained_resnet20):  # noqa: ANN001, ANN201
    return trained_resnet20


def _resnet_objective(trained_resnet, splits, **overrides) -> PruningObjective:  # noqa: ANN001, ANN003
    """The objective of the ``objective`` fixture, with some arguments changed."""
    kwargs = {
        "calibration": Subset(splits.train, range(2000, 4000)),
        "validation": Subset(splits.val, range(500)),
        "flops_ratio": 0.5,
        "n_calibration_images": 300,
        "eval_batch_size": 250,
        "device": "cpu",
        **overrides,
    }
    return PruningObjective(trained_resnet, **kwargs)


@pytest.fixture(scope="module")
def objective(trained_resnet, splits):  # noqa: ANN001, ANN201
    return _resnet_objective(trained_resnet, splits)


def _random_ratios(objective: PruningObjective, rng: np.random.Generator) -> dict[str, float]:
    return {
        name: float(rng.uniform(objective.lbound, objective.rbound))
        for name in objective.search_space
    }


def test_search_space_and_features(objective: PruningObjective) -> None:
    space = objective.search_space
    assert list(space) == [f"layer{s}.{b}.conv2" for s in (1, 2, 3) for b in range(3)]
    for dist in space.values():
        assert isinstance(dist, optuna.distributions.FloatDistribution)
        assert (dist.low, dist.high) == (0.1, 1.0)
    features = objective.layer_features()
    assert isinstance(features, ParameterFeatures)
    assert list(features.samples) == list(space) == list(features.vectors)
    assert features.samples["layer1.0.conv2"].shape == (16,)
    assert features.samples["layer3.2.conv2"].shape == (64,)
    assert (features.samples["layer2.1.conv2"] > 0).all()
    vec = features.vectors["layer2.1.conv2"]
    # c_in, c_out, kernel area, params, MACs, output size, c_in / c_out
    np.testing.assert_allclose(vec, [32, 32, 9, 32 * 32 * 9, 16 * 16 * 32 * 32 * 9, 256, 1.0])
    assert objective.original_flops == pytest.approx(40.55e6, rel=0.01)
    assert 30.0 < objective.baseline_top1 <= 100.0  # trained for a moment: far above chance


def test_budget_and_recorded_values(objective: PruningObjective) -> None:
    rng = np.random.default_rng(0)
    ratios = _random_ratios(objective, rng)
    ratios = {k: max(v, 0.9) for k, v in ratios.items()}  # over budget: must be clipped
    result = objective.evaluate(ratios)
    actual = result[ACTUAL_PARAMS_KEY]
    assert list(actual) == list(objective.search_space)
    assert all(type(v) is float for v in actual.values())
    assert all(objective.lbound <= actual[k] <= ratios[k] for k in ratios)
    assert actual != ratios
    assert result[FLOPS_RATIO_KEY] <= 0.5
    assert result[FLOPS_RATIO_KEY] > 0.45  # the budget is used, not wasted
    assert 0.0 < result[PARAMS_RATIO_KEY] < 1.0
    assert 0.0 <= result[TOP1_KEY] <= result[TOP5_KEY] <= 100.0
    assert result[EVAL_SECONDS_KEY] > 0.0
    assert objective.clip(ratios) == actual
    assert objective.clip(actual) == actual  # actual ratios are a fixed point


def test_scale_rule_keeps_proportions_uses_the_budget_and_prunes_better(
    objective: PruningObjective,
    trained_resnet,
    splits,  # noqa: ANN001
) -> None:
    scale = objective
    wall = _resnet_objective(trained_resnet, splits, budget_rule="wall")
    assert (scale.budget_rule, wall.budget_rule) == ("scale", "wall")  # "scale": the default
    rng = np.random.default_rng(0)
    wall_top1, scale_top1 = [], []
    for i in range(4):
        ratios = _random_ratios(scale, rng)
        if i == 0:
            ratios = dict.fromkeys(ratios, scale.lbound)  # under the budget: grows to it
        result = scale.evaluate(ratios)
        actual = result[ACTUAL_PARAMS_KEY]
        assert 0.48 < result[FLOPS_RATIO_KEY] <= 0.5
        factors = [actual[k] / ratios[k] for k in ratios if scale.lbound < actual[k] < 1.0]
        assert max(factors) == pytest.approx(min(factors), rel=1e-9)
        assert scale.clip(actual) == actual  # actual ratios are a fixed point
        assert scale.evaluate(actual)[TOP1_KEY] == result[TOP1_KEY]
        scale_top1.append(result[TOP1_KEY])
        wall_top1.append(wall.evaluate(ratios)[TOP1_KEY])
    # The wall rule leaves a proposal under the budget as it is and cuts the last layers of
    # one over it; scaling uses the whole budget and spreads the cut over every layer.
    assert np.mean(scale_top1) > np.mean(wall_top1) + 5.0, (scale_top1, wall_top1)


def test_deterministic(objective: PruningObjective, trained_resnet, splits) -> None:  # noqa: ANN001
    ratios = _random_ratios(objective, np.random.default_rng(1))
    first = objective.evaluate(ratios)
    second = objective.evaluate(ratios)
    assert first[TOP1_KEY] == second[TOP1_KEY] and first[TOP5_KEY] == second[TOP5_KEY]
    again = _resnet_objective(trained_resnet, splits)
    assert again.evaluate(ratios)[TOP1_KEY] == first[TOP1_KEY]


def test_full_ratios_are_the_baseline(trained_resnet, splits) -> None:  # noqa: ANN001
    objective = PruningObjective(
        trained_resnet,
        calibration=DataLoader(Subset(splits.train, range(200)), batch_size=50),
        validation=DataLoader(Subset(splits.val, range(300)), batch_size=100),
        flops_ratio=1.0,
        n_calibration_images=100,
        device="cpu",
    )
    result = objective.evaluate(dict.fromkeys(objective.search_space, 1.0))
    assert result[FLOPS_RATIO_KEY] == 1.0 and result[PARAMS_RATIO_KEY] == 1.0
    assert result[TOP1_KEY] == objective.baseline_top1


def test_pruned_and_masked_evaluation_agree(
    objective: PruningObjective,
    trained_resnet,  # noqa: ANN001
    splits,  # noqa: ANN001
) -> None:
    """Trials run on the physically pruned copy by default; the masked network agrees."""
    masked = _resnet_objective(trained_resnet, splits, evaluate_pruned=False)
    reference = {k: v.clone() for k, v in objective._model.state_dict().items()}
    full_size_calls = []
    handles = [
        obj._model.register_forward_hook(lambda m, i, o: full_size_calls.append(m))
        for obj in (objective, masked)
    ]
    rng = np.random.default_rng(5)
    differences = []
    for _ in range(4):
        ratios = _random_ratios(objective, rng)
        pruned_result, masked_result = objective.evaluate(ratios), masked.evaluate(ratios)
        assert pruned_result[ACTUAL_PARAMS_KEY] == masked_result[ACTUAL_PARAMS_KEY]
        assert pruned_result[FLOPS_RATIO_KEY] == masked_result[FLOPS_RATIO_KEY]
        differences.append(abs(pruned_result[TOP1_KEY] - masked_result[TOP1_KEY]))
        differences.append(abs(pruned_result[TOP5_KEY] - masked_result[TOP5_KEY]))
    for handle in handles:
        handle.remove()
    # Only the masked objective ran its full-size network (2 batches per evaluation); the
    # other one ran its pruned copies (which inherit the hook).
    assert sum(m is masked._model for m in full_size_calls) == 8
    assert sum(m is objective._model for m in full_size_calls) == 0
    assert len(full_size_calls) >= 16
    # float32 rounding may flip the odd image of 500 (0.2 points each), never more.
    assert max(differences) <= 0.4, differences
    # Building the pruned copy leaves the objective's own network as it was.
    for key, value in objective._model.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_reconstruction_beats_plain_masking(objective: PruningObjective, splits) -> None:  # noqa: ANN001
    """The least-squares refit fits the unpruned layer's output better on unseen images."""
    name = "layer3.1.conv2"
    ratios = dict.fromkeys(objective.search_space, 1.0)
    ratios = objective.clip({**ratios, name: 0.3})
    x = torch.stack([splits.val[i][0] for i in range(500, 700)])
    captured: list[torch.Tensor] = []
    with objective.masked(dict.fromkeys(objective.search_space, 1.0)) as model:
        conv = dict(model.named_modules())[name]
        handle = conv.register_forward_pre_hook(lambda m, inp: captured.append(inp[0]))
        with torch.no_grad():
            model(x)
        handle.remove()
    features = captured[0]
    original = conv.weight.detach().clone()
    kept = objective.kept_channels(ratios)[name]
    assert len(kept) == round(64 * ratios[name])
    recon = objective.masked_weights(ratios)[name]
    assert (recon[:, [i for i in range(64) if i not in set(kept.tolist())]] == 0).all()
    plain = torch.zeros_like(original)
    plain[:, kept] = original[:, kept]
    conv2d = nn.functional.conv2d
    target = conv2d(features, original, padding=1)
    err_plain = (conv2d(features, plain, padding=1) - target).square().mean()
    err_recon = (conv2d(features, recon, padding=1) - target).square().mean()
    assert err_recon < 0.8 * err_plain


def test_network_key_names_the_evaluated_network(objective: PruningObjective) -> None:
    ratios = _random_ratios(objective, np.random.default_rng(3))
    key = objective.network_key(ratios)
    kept = objective.kept_channels(ratios)
    assert key == tuple(len(kept[name]) for name in objective.search_space)
    # A hair's change of every ratio keeps the channel counts: the same network, the same
    # score; two layers moved by many channels are another network.
    actual = objective.clip(ratios)
    nudged = {n: r - 1e-6 for n, r in actual.items()}
    moved = dict(actual, **{"layer1.0.conv2": 1.0, "layer3.2.conv2": objective.lbound})
    assert objective.network_key(nudged) == objective.network_key(actual) == key
    assert objective.evaluate(nudged)[TOP1_KEY] == objective.evaluate(actual)[TOP1_KEY]
    assert objective.network_key(moved) != key
    with pytest.raises(ValueError, match="layer1.0.conv2"):
        objective.network_key({k: v for k, v in ratios.items() if k != "layer1.0.conv2"})


def test_kept_channels_have_largest_l1(objective: PruningObjective) -> None:
    ratios = objective.clip(dict.fromkeys(objective.search_space, 0.5))
    features = objective.layer_features()
    for name, kept in objective.kept_channels(ratios).items():
        importance = torch.as_tensor(features.samples[name])
        dropped = [i for i in range(len(importance)) if i not in set(kept.tolist())]
        if dropped:
            assert importance[kept].min() >= importance[dropped].max()


def test_no_drift_after_100_trials(splits, quick_train) -> None:  # noqa: ANN001
    model = quick_train(_small_cnn(), *splits.train.tensors(range(1000)))
    reference = copy.deepcopy(model.state_dict())
    objective = PruningObjective(
        model,
        calibration=Subset(splits.train, range(200)),
        validation=Subset(splits.val, range(200)),
        flops_ratio=0.6,
        n_calibration_images=200,
        device="cpu",
    )
    before = {k: v.clone() for k, v in objective._model.state_dict().items()}
    values = []
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    study.optimize(objective, n_trials=100)
    for trial in study.trials:
        values.append(trial.value)
    after = objective._model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    for key, value in model.state_dict().items():  # the user's model is never touched
        assert torch.equal(value, reference[key])
    assert len(set(values)) > 1
    # The first trial again gives exactly the same accuracy.
    first = study.trials[0]
    assert objective.evaluate(first.params)[TOP1_KEY] == first.value


def test_report_and_pruner(objective: PruningObjective) -> None:
    reference = {k: v.clone() for k, v in objective._model.state_dict().items()}
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.ThresholdPruner(lower=101.0),  # prunes at the first report
    )
    study.optimize(objective, n_trials=2)
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert list(trial.intermediate_values) == [0]
        assert trial.user_attrs[FLOPS_RATIO_KEY] <= 0.5
        assert set(trial.user_attrs[ACTUAL_PARAMS_KEY]) == set(objective.search_space)
    for key, value in objective._model.state_dict().items():
        assert torch.equal(value, reference[key])
    # Not pruned: intermediate values at every batch but the last one (500 / 250 = 2).
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert list(trial.intermediate_values) == [0]


def test_bad_ratios(objective: PruningObjective) -> None:
    ratios = dict.fromkeys(objective.search_space, 0.5)
    with pytest.raises(ValueError, match="outside"):
        objective.evaluate({**ratios, "layer1.0.conv2": 0.05})
    with pytest.raises(ValueError, match="outside"):
        objective.clip({**ratios, "layer1.0.conv2": 1.5})
    with pytest.raises(ValueError, match="outside"):
        objective.clip({**ratios, "layer1.0.conv2": math.nan})
    with pytest.raises(ValueError, match="missing"):
        objective.evaluate({k: v for k, v in ratios.items() if k != "layer2.0.conv2"})
    with pytest.raises(ValueError, match="unknown"):
        objective.evaluate({**ratios, "conv1": 0.5})
    with pytest.raises(TypeError):
        objective.export(0.5)  # type: ignore[arg-type]


def _kwargs(splits, **overrides):  # noqa: ANN001, ANN003, ANN202
    kwargs = dict(
        calibration=Subset(splits.train, range(100)),
        validation=Subset(splits.val, range(100)),
        n_calibration_images=50,
        device="cpu",
    )
    kwargs.update(overrides)
    return kwargs


def test_construction_errors(splits) -> None:  # noqa: ANN001
    model = _small_cnn().eval()
    with pytest.raises(ValueError, match="cannot be met"):
        PruningObjective(model, **_kwargs(splits, flops_ratio=0.3, lbound=0.9))
    with pytest.raises(ValueError, match="lbound"):
        PruningObjective(model, **_kwargs(splits, lbound=0.0))
    with pytest.raises(ValueError, match="flops_ratio"):
        PruningObjective(model, **_kwargs(splits, flops_ratio=1.5))
    with pytest.raises(ValueError, match="budget_rule must be one of 'scale', 'wall'"):
        PruningObjective(model, **_kwargs(splits, budget_rule="amc"))
    with pytest.raises(ValueError, match="empty"):
        PruningObjective(model, **_kwargs(splits, validation=Subset(splits.val, [])))
    with pytest.raises(ValueError, match="cannot run"):  # 3-channel model, 1-channel data
        PruningObjective(resnet20(in_channels=3), **_kwargs(splits))
    small = TensorDataset(
        torch.stack([splits.val[i][0][:, :28, :28] for i in range(20)]),
        torch.zeros(20, dtype=torch.long),
    )
    with pytest.raises(ValueError, match="shape"):
        PruningObjective(model, **_kwargs(splits, validation=small))
    with pytest.raises(TypeError, match="DataLoader or Dataset"):
        PruningObjective(model, **_kwargs(splits, validation=[1, 2, 3]))
    bad_labels = TensorDataset(
        torch.stack([splits.val[i][0] for i in range(20)]), torch.full((20,), 10, dtype=torch.long)
    )
    with pytest.raises(ValueError, match="labels"):
        PruningObjective(model, **_kwargs(splits, validation=bad_labels))
    with pytest.raises(ValueError, match="Unknown device"):
        PruningObjective(model, **_kwargs(splits, device="nonsense"))
    with pytest.raises(TypeError, match="nn.Module"):
        PruningObjective("resnet20", **_kwargs(splits))  # type: ignore[arg-type]


def test_no_prunable_layer(splits) -> None:  # noqa: ANN001
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    )
    with pytest.raises(ValueError, match="no prunable layer"):
        PruningObjective(model, **_kwargs(splits))


def test_device_errors(splits) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="model is on meta"):
        PruningObjective(_small_cnn().to("meta"), **_kwargs(splits))
    meta = TensorDataset(
        torch.zeros(10, 1, 32, 32, device="meta"), torch.zeros(10, dtype=torch.long)
    )
    with pytest.raises(ValueError, match="validation is on meta"):
        PruningObjective(_small_cnn(), **_kwargs(splits, validation=meta))


def test_nan_outputs(splits) -> None:  # noqa: ANN001
    model = _small_cnn().eval()
    with torch.no_grad():
        model[7].running_var.fill_(-1.0)  # sqrt of a negative variance: NaN activations
    with pytest.raises(FloatingPointError, match="NaN"):
        PruningObjective(model, **_kwargs(splits))


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Conv2d(3, 4, 3, stride=2, padding=2, dilation=2, padding_mode="reflect"),
        nn.Conv2d(3, 4, (1, 3), stride=(1, 2)),
        nn.Conv2d(3, 4, 3, padding="same"),
    ],
)
def test_sampled_patches_match_the_convolution(conv: nn.Conv2d, splits) -> None:  # noqa: ANN001
    from optuna_bocr.pruning._reconstruct import _sampled_patches

    x = torch.stack([splits.val[i][0] for i in range(4)]).repeat(1, 3, 1, 1)
    rows = _sampled_patches(conv, x, 7, torch.Generator().manual_seed(0))
    pos = torch.randint(
        conv(x).shape[-2] * conv(x).shape[-1], (4, 7), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        expected = conv(x).flatten(2).gather(2, pos[:, None, :].expand(4, 4, 7))
        expected = expected.permute(0, 2, 1).reshape(28, 4)
        got = rows @ conv.weight.reshape(4, -1).T + conv.bias
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(trained_resnet, splits, objective: PruningObjective) -> None:  # noqa: ANN001
    on_gpu = _resnet_objective(trained_resnet, splits, device="auto")
    assert on_gpu.device.type == "cuda"
    ratios = _random_ratios(objective, np.random.default_rng(3))
    cpu, gpu = objective.evaluate(ratios), on_gpu.evaluate(ratios)
    assert gpu[ACTUAL_PARAMS_KEY] == cpu[ACTUAL_PARAMS_KEY]
    assert abs(gpu[TOP1_KEY] - cpu[TOP1_KEY]) <= 1.0
    assert on_gpu.evaluate(ratios)[TOP1_KEY] == gpu[TOP1_KEY]
    exported = on_gpu.export(ratios)
    assert next(exported.parameters()).device.type == "cuda"
    fast = _resnet_objective(trained_resnet, splits, device="cuda", autocast=True)
    assert abs(fast.evaluate(ratios)[TOP1_KEY] - cpu[TOP1_KEY]) <= 2.0
