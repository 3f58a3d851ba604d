"""Training, evaluation and latency measurement of image classifiers (baselines, fine-tuning).

:func:`evaluate` and the pruning objective count accuracy with the same loop, and every
device name of the CNN side goes through :func:`resolve_device`.
"""

from __future__ import annotations

from optuna_bocr.training._device import resolve_device
from optuna_bocr.training._evaluation import evaluate
from optuna_bocr.training._training import measure_latency
from optuna_bocr.training._training import train

__all__ = ["evaluate", "measure_latency", "resolve_device", "train"]
