"""The ``optuna-bocr`` command: ``train`` a baseline, ``prune`` it with BOCR, ``export`` a trial.

Run ``optuna-bocr <command> --help`` for the options; docs/cli.md is the reference.
Bad input ends with one line on stderr and exit status 2, and leaves existing studies as
they were: every check that can fail runs before anything is written to the storage.
"""

from __future__ import annotations

from collections.abc import Sequence
import sys

from optuna_bocr.cli._common import CLIError
from optuna_bocr.cli._common import PROG
from optuna_bocr.cli._parser import build_parser

__all__ = ["build_parser", "CLIError", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``optuna-bocr`` command line.

    Args:
        argv:
            Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on bad input, 130 when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CLIError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
