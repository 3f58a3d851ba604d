"""``python -m optuna_bocr``: the ``optuna-bocr`` command line."""

from __future__ import annotations

import sys

from optuna_bocr.cli import main

if __name__ == "__main__":
    sys.exit(main())
