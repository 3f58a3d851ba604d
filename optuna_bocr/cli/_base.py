"""What every subcommand is built from: the command class, the parser and argument types.

A subcommand is a :class:`Command` subclass that declares its arguments
(:meth:`Command.add_arguments`) next to its handler (:meth:`Command.take_action`), as in
Optuna's own command line; :func:`optuna_bocr.cli.build_parser` collects them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import math
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class Command:
    """One ``optuna-bocr`` subcommand.

    Attributes:
        name: The subcommand (``optuna-bocr <name>``).
        help: One line for ``optuna-bocr --help``.
        description: The paragraph of ``optuna-bocr <name> --help``.
    """

    name: str = ""
    help: str = ""
    description: str = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the subcommand's arguments on ``parser``."""

    def take_action(self, args: argparse.Namespace) -> int:
        """Run the subcommand; return the exit status (raise ``CLIError`` on bad input)."""
        raise NotImplementedError


def _checked(
    convert: Callable[[str], float], ok: Callable[[float], bool], expected: str
) -> Callable[[str], float]:
    """Argument type: ``convert(text)`` if it parses and ``ok`` holds, else "expected ..."."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int: Callable[[str], int] = _checked(int, lambda v: v >= 1, "a positive integer")  # type: ignore[assignment]
"""Argument type: an integer >= 1."""
nonneg_int: Callable[[str], int] = _checked(int, lambda v: v >= 0, "an integer >= 0")  # type: ignore[assignment]
"""Argument type: an integer >= 0."""
nonneg_float = _checked(float, lambda v: v >= 0 and not math.isinf(v), "a finite number >= 0")
"""Argument type: a finite number >= 0."""
ratio = _checked(float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")
"""Argument type: a number in (0, 1]."""


def int_list_or_keyword(keywords: tuple[str, ...]) -> Callable[[str], str | list[int]]:
    """Argument type: one of ``keywords`` or comma-separated positive integers."""

    def parse(text: str) -> str | list[int]:
        if text.lower() in keywords:
            return text.lower()
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {' or '.join(keywords)} or comma-separated integers, got {text!r}"
            ) from None
        if not values or any(v < 1 for v in values):
            raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
        return values

    return parse
