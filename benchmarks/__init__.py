"""Benchmarks of optuna-bocr, run as modules: ``python -m benchmarks.pruning``."""
