"""The per-layer sensitivity probe on a trained ResNet-20 and real Fashion-MNIST images."""

from __future__ import annotations

import numpy as np
from optuna.distributions import FloatDistribution
import pytest
from torch import nn

from optuna_bocr import BOCRSampler
from optuna_bocr.data import DataSplits
from optuna_bocr.pruning import layer_sensitivity
from optuna_bocr.pruning import LayerSensitivity
from optuna_bocr.pruning._sensitivity import DIVERGENCE_FLOOR


@pytest.fixture(scope="module")
def probe(trained_resnet20: nn.Module, fashion_splits: DataSplits) -> LayerSensitivity:
    return layer_sensitivity(
        trained_resnet20,
        calibration=fashion_splits.train,
        validation=fashion_splits.val,
        ratios=(0.1, 0.9),
        n_images=300,
        n_calibration_images=500,
        device="cpu",
    )


def test_curves_cost_and_features(probe: LayerSensitivity) -> None:
    assert len(probe.drops) == 9  # the 9 inner convolutions of ResNet-20
    assert all(d.shape == (2,) for d in probe.drops.values())
    assert probe.n_images == 300
    assert probe.n_evaluations == 1 + 9 * 2
    assert probe.cost_in_evaluations(3000) == pytest.approx(19 * 300 / 3000)
    # Keeping 10% of a layer's channels costs more than keeping 90%, on average.
    drops = np.stack(list(probe.drops.values()))
    assert drops[:, 0].mean() > drops[:, 1].mean()
    assert drops[:, 0].max() > 1.0
    vectors = probe.features("top1").vectors
    stacked = np.stack([vectors[n] for n in probe.drops])
    assert stacked.min() >= 0.0
    assert stacked.max() == pytest.approx(np.log1p(drops.max()))


def test_divergence_curves_resolve_mild_pruning(probe: LayerSensitivity) -> None:
    kl = np.stack([probe.divergences[n] for n in probe.drops])
    assert kl.shape == (9, 2)
    assert kl.min() >= 0.0
    # Every layer moves the predictions more at 10% of its channels than at 90%, even
    # where 300 images cannot tell the two apart in accuracy.
    assert (kl[:, 0] > kl[:, 1]).all()
    assert (kl[:, 1] > 0.0).all()
    # The default features are the logarithm of the divergence above a floor.
    vectors = probe.features().vectors
    stacked = np.stack([vectors[n] for n in probe.drops])
    assert stacked == pytest.approx(np.log(kl + DIVERGENCE_FLOOR))
    with pytest.raises(ValueError, match="measure"):
        probe.features("loss")


def test_sampler_clusters_on_the_curves(probe: LayerSensitivity) -> None:
    space = {n: FloatDistribution(0.1, 1.0) for n in probe.drops}
    sampler = BOCRSampler(space, features=probe.features(), n_clusters=3, seed=0)
    assert sampler.structure_pvalue is not None
    assert sum(len(c) for c in sampler.clusters(0)) == 9


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ratios": ()}, "ratios"),
        ({"ratios": (0.5, 1.0)}, "ratios"),
        ({"n_images": 0}, "n_images"),
    ],
)
def test_bad_arguments(
    trained_resnet20: nn.Module, fashion_splits: DataSplits, kwargs: dict, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        layer_sensitivity(
            trained_resnet20,
            calibration=fashion_splits.train,
            validation=fashion_splits.val,
            **kwargs,
        )
