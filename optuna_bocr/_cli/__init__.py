"""The ``optuna-bocr`` command line (private); the entry point is :func:`optuna_bocr.cli.main`."""
