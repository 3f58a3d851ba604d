"""Optuna's generic sampler test cases (``optuna.testing.pytest_samplers``) on BOCRSampler.

BOCRSampler has a fixed, float-only relative search space given at construction, and
Optuna itself rejects suggesting a parameter of that space with another distribution *kind*
(``suggest_int("x")`` when the space declares ``x`` as a float). So:

- The basic cases, which suggest ``x``/``y`` as every kind in turn, run against a sampler
  whose space uses other names: every trial still goes through ``sample_relative`` (and
  records its proposal), and every suggested parameter takes the independent-sampler path,
  which is what those cases check.
- The relative cases run against a sampler over ``x`` and ``y`` in ``[-10, 10]``. Those that
  pass their own int / log / step / categorical space to ``sample_relative`` do not apply
  (such spaces are rejected at construction) and are skipped; their float part is checked by
  ``test_float_relative_sampling_in_bounds_and_python_floats``.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
from optuna.distributions import FloatDistribution
from optuna.samplers import BaseSampler
from optuna.testing.pytest_samplers import BasicSamplerTestCase
from optuna.testing.pytest_samplers import RelativeSamplerTestCase
from optuna.testing.pytest_samplers import SingleOnlySamplerTestCase
import pytest

from optuna_bocr import BOCRSampler
from optuna_bocr.sampler._storage import PROPOSAL_ATTR

optuna.logging.set_verbosity(optuna.logging.WARNING)

_NOT_FLOAT_ONLY = (
    "BOCRSampler's relative search space is fixed at construction and float-only; this case "
    "passes its own int/log/step/categorical space to sample_relative."
)


def _make(names: tuple[str, str] = ("x", "y")) -> BOCRSampler:
    space = {n: FloatDistribution(-10, 10) for n in names}
    return BOCRSampler(
        space, features=[[0.0], [1.0]], n_clusters=1, rollback_at=(6,), n_startup_trials=4, seed=0
    )


class TestBOCRSamplerBasic(BasicSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return lambda: _make(("bocr_a", "bocr_b"))


class TestBOCRSamplerRelative(RelativeSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return _make

    @pytest.mark.skip(reason=_NOT_FLOAT_ONLY)
    def test_sample_relative_numerical(self) -> None:  # type: ignore[override]
        pass

    @pytest.mark.skip(reason=_NOT_FLOAT_ONLY)
    def test_sample_relative_categorical(self) -> None:  # type: ignore[override]
        pass

    @pytest.mark.skip(reason=_NOT_FLOAT_ONLY)
    def test_sample_relative_mixed(self) -> None:  # type: ignore[override]
        pass


class TestBOCRSamplerSingleOnly(SingleOnlySamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return _make


def test_float_relative_sampling_in_bounds_and_python_floats() -> None:
    """The float-only part of ``test_sample_relative_numerical``, which does apply."""
    sampler = _make()
    study = optuna.create_study(sampler=sampler)
    for _ in range(8):
        trial = study.ask()
        params = {n: trial.suggest_float(n, -10, 10) for n in ("x", "y")}
        study.tell(trial, params["x"] + params["y"])
        for value in params.values():
            assert type(value) is float
            assert -10.0 <= value <= 10.0
        proposal = study.trials[-1].system_attrs[PROPOSAL_ATTR]
        assert proposal == [params["x"], params["y"]]  # The values come from sample_relative.
