"""Checks of BOCRSampler's scalar arguments: one clear line per wrong value, before any work."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from typing import Any


def check_count(name: str, value: Any, *, minimum: int) -> int:
    """``value`` as an int of at least ``minimum`` (not a bool), else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return value


def check_number(name: str, value: Any, *, ok: Callable[[float], bool], allowed: str) -> float:
    """``value`` as a float, else a TypeError (not a number) or a ValueError (``not ok``).

    Args:
        name: The argument's name, for the message.
        value: What the user passed.
        ok: Whether a number is allowed.
        allowed: What is allowed, in words (``"a number in [0, 1]"``), for the message.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}.")
    if not ok(float(value)):
        raise ValueError(f"{name} must be {allowed}, got {value!r}.")
    return float(value)


def check_flags(flags: Mapping[str, Any]) -> None:
    """Each value of ``flags`` (argument name -> value) is a bool, else a TypeError."""
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be a bool, got {value!r}.")


def check_incumbent(incumbent: Any, *, trust_region: bool) -> None:
    """``incumbent`` is ``"observed"`` or ``"mean"``, the latter only with a trust region."""
    if incumbent not in ("observed", "mean"):
        raise ValueError(f"incumbent must be 'observed' or 'mean', got {incumbent!r}.")
    if incumbent == "mean" and not trust_region:
        raise ValueError(
            "incumbent='mean' sets where the trust region centres: pass trust_region=True "
            "with it, or leave incumbent at 'observed'."
        )


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """``value`` is one of ``choices``, else a ValueError naming them."""
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
