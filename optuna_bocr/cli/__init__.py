"""The ``optuna-bocr`` command: ``train`` a baseline, ``prune`` it with BOCR, ``export`` a trial.

Run ``optuna-bocr <command> --help`` for the options; docs/cli.md is the reference.
Each subcommand is a :class:`~optuna_bocr.cli._base.Command` that declares its arguments
next to its handler; the handler turns them into one settings object, checks it, and runs
its job. Bad input ends with one line on stderr and exit status 2, before any work and
before anything is written: a refused command leaves no file, study or trial behind.

For your own scripts, :func:`open_storage`, :class:`StorageLock` and :class:`TrialRunner`
are the pieces ``prune`` runs its workers with (heartbeat, exact trial count, safe schema
creation on a new database); :func:`save_bocr_note` writes BOCR's view of a study (clusters,
structure test, stages) as its optuna-dashboard note.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import sys
import warnings

from optuna_bocr.cli._base import Command
from optuna_bocr.cli._base import Parser
from optuna_bocr.cli._common import CLIError
from optuna_bocr.cli._common import PROG
from optuna_bocr.cli._export import ExportCommand
from optuna_bocr.cli._note import save_bocr_note
from optuna_bocr.cli._prune import PruneCommand
from optuna_bocr.cli._storage import open_storage
from optuna_bocr.cli._storage import StorageLock
from optuna_bocr.cli._train import TrainCommand
from optuna_bocr.cli._worker import TrialRunner

__all__ = [
    "build_parser",
    "CLIError",
    "main",
    "open_storage",
    "save_bocr_note",
    "StorageLock",
    "TrialRunner",
]

COMMANDS: tuple[type[Command], ...] = (TrainCommand, PruneCommand, ExportCommand)


def build_parser() -> argparse.ArgumentParser:
    """The ``optuna-bocr`` argument parser: one subparser per command in :data:`COMMANDS`."""
    from optuna_bocr import __version__

    parser = Parser(
        prog=PROG,
        description="Channel pruning of CNNs with BOCR (Bayesian optimisation with clustering "
        "and rollback) on Optuna. Start with `optuna-bocr prune`.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for cls in COMMANDS:
        command = cls()
        p = sub.add_parser(command.name, help=command.help, description=command.description)
        command.add_arguments(p)
        p.set_defaults(take_action=command.take_action)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``optuna-bocr`` command line.

    Args:
        argv:
            Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on bad input, 130 when interrupted.
    """
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            import optuna

            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return int(args.take_action(args))
    except CLIError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
