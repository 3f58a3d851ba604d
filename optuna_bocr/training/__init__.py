"""Training, evaluation and latency measurement of image classifiers (baselines, fine-tuning)."""

from __future__ import annotations

from optuna_bocr.training._training import evaluate
from optuna_bocr.training._training import measure_latency
from optuna_bocr.training._training import resolve_device
from optuna_bocr.training._training import train

__all__ = ["evaluate", "measure_latency", "resolve_device", "train"]
