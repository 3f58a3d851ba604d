"""Fixtures shared by the test modules: real Fashion-MNIST splits and a quickly trained model."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from optuna_bocr.data import DataSplits
from optuna_bocr.data import load_splits
from optuna_bocr.models import resnet20


def _quick_train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> nn.Module:
    """One seeded epoch of Adam: far above chance, far from converged (no thread luck needed:
    lr 1e-3 keeps it stable with 1 or 2 threads)."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    perm = torch.randperm(images.shape[0])
    for start in range(0, images.shape[0], 64):
        idx = perm[start : start + 64]
        opt.zero_grad()
        nn.functional.cross_entropy(model(images[idx]), labels[idx]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def quick_train() -> Callable[[nn.Module, torch.Tensor, torch.Tensor], nn.Module]:
    """The quick training function itself, for tests that train their own small model."""
    return _quick_train


@pytest.fixture(scope="session")
def fashion_splits() -> DataSplits:
    """Fashion-MNIST padded to 32x32, 1000 validation images held out from the training set."""
    try:
        return load_splits("fashion-mnist", val_size=1000, seed=0, image_size=32)
    except FileNotFoundError as e:  # pragma: no cover - CI installs the data
        pytest.skip(f"Fashion-MNIST is not installed: {e}")


@pytest.fixture(scope="session")
def trained_resnet20(fashion_splits: DataSplits) -> nn.Module:
    """A 1-channel CIFAR ResNet-20 trained for a moment on 3000 real images.

    Shared by several modules; PruningObjective works on a copy, so it is never modified.
    """
    torch.manual_seed(0)  # the initial weights too, whatever ran before
    return _quick_train(resnet20(in_channels=1), *fashion_splits.train.tensors(range(3000)))
