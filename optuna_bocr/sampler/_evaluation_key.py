"""Points the objective evaluates alike: never spend a trial on a known evaluation.

An objective may map many points to one evaluation: the pruning objective rounds each
layer's ratio to a whole number of channels, so ratios a fraction of a channel apart prune
to the same network and score the same (measured on ResNet-20 with 16-channel layers: up to
37 of BOCR's 200 trials repeated an earlier network, because a trust region of side 0.05
is narrower than one channel). Given ``evaluation_key`` (params -> a hashable key of what
the objective evaluates), the sampler proposes no point whose key an earlier or running
trial has while its candidates hold one with a new key, and a trust region too small to
hold one is widened for that proposal.

The keys are a pure function of the params, so they are recomputed, not stored: every
process that reads the same trials skips the same points (a memo only saves the time).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Hashable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence

import numpy as np

EvaluationKey = Callable[[Mapping[str, float]], Hashable]
"""``params -> key``: two points with the same key are evaluated alike."""

_MEMO_SIZE = 100_000
"""The memo is cleared when it holds this many points (keys are then recomputed)."""


def check_evaluation_key(value: object) -> EvaluationKey | None:
    """``value`` as an evaluation key, or an error saying what is allowed.

    Raises:
        TypeError: ``value`` is neither ``None`` nor callable.
    """
    if value is not None and not callable(value):
        raise TypeError(
            "evaluation_key must be None or a callable taking a dict of params and returning "
            f"a hashable key (e.g. PruningObjective.network_key), got {value!r}."
        )
    return value


class EvaluationKeys:
    """The keys of points given as per-parameter rows, memoised.

    Args:
        key: The user's ``evaluation_key``.
        names: Parameter names, in the order of the rows' columns.
    """

    def __init__(self, key: EvaluationKey, names: Sequence[str]) -> None:
        self._key = key
        self._names = tuple(names)
        self._memo: dict[bytes, Hashable] = {}

    def of(self, params: np.ndarray) -> Hashable:
        """The key of one point, ``(n_params,)`` per-parameter values."""
        row = np.asarray(params, dtype=float)
        raw = row.tobytes()
        if raw in self._memo:
            return self._memo[raw]
        try:
            found = self._key(dict(zip(self._names, row.tolist(), strict=True)))
            hash(found)
        except Exception as e:  # the user's function: say which point and what it must do
            raise RuntimeError(
                f"evaluation_key failed on {dict(zip(self._names, row.tolist(), strict=True))}: "
                f"{e} (it must return a hashable key for any params of the search space)."
            ) from e
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[raw] = found
        return found

    def known(self, rows: Iterable[np.ndarray]) -> set[Hashable]:
        """The keys of the points of ``rows`` (each ``(n_params,)``)."""
        return {self.of(r) for r in rows}


class TakenKeys:
    """The keys that trials already have, and whether a point's key is one of them.

    Args:
        keys: The sampler's memoised keys.
        rows: ``(n, n_params)`` the points of the trials (observed, running, proposed).
    """

    def __init__(self, keys: EvaluationKeys, rows: Iterable[np.ndarray]) -> None:
        self._keys = keys
        self._known = keys.known(rows)

    def __call__(self, params: np.ndarray) -> bool:
        """Whether the point ``(n_params,)`` is evaluated like a trial's."""
        return self._keys.of(params) in self._known

    def add(self, rows: Iterable[np.ndarray]) -> None:
        """Count the points of ``rows`` as taken too (e.g. other workers' claims)."""
        self._known |= self._keys.known(rows)
