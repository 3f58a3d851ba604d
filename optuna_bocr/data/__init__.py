"""Datasets as fixed, seeded train / validation / test splits.

The validation split is always drawn from the training set; the test set is kept for final
reporting.
"""

from __future__ import annotations

from optuna_bocr.data._datasets import DATASET_NAMES
from optuna_bocr.data._datasets import DataSplits
from optuna_bocr.data._datasets import ImageTensorDataset
from optuna_bocr.data._datasets import load_splits
from optuna_bocr.data._fashion_mnist import DEBIAN_FASHION_MNIST
from optuna_bocr.data._fashion_mnist import default_data_root

__all__ = [
    "DATASET_NAMES",
    "DEBIAN_FASHION_MNIST",
    "DataSplits",
    "ImageTensorDataset",
    "default_data_root",
    "load_splits",
]
