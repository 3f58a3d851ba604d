from __future__ import annotations

import numpy as np
import pytest

from optuna_bocr.sampler._schedule import last_new_best
from optuna_bocr.sampler._schedule import make_schedule
from optuna_bocr.sampler._schedule import rollback_bounds
from optuna_bocr.sampler._schedule import ROLLBACK_MARGIN
from optuna_bocr.sampler._schedule import should_advance


def _sched(**kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = dict(
        dims=10,
        n_clusters=2,
        bridge_clusters=None,
        rollback_at=(100, 150),
        patience=20,
        patience_from=(80, 130),
    )
    args.update(kw)
    return make_schedule(**args)  # type: ignore[arg-type]


def test_direct_gradual_and_cluster_only_schedules() -> None:
    direct = _sched()
    assert direct.sizes == (2, 10) and direct.rollback_at == (100,)
    assert direct.patience_from == (80,)
    gradual = _sched(bridge_clusters=5)
    assert gradual.sizes == (2, 5, 10) and gradual.rollback_at == (100, 150)
    two = _sched(bridge_clusters=[4, 6], rollback_at=(10, 20, 30), patience_from=(5, 15, 25))
    assert two.sizes == (2, 4, 6, 10) and two.n_stages == 4
    only = _sched(rollback_at=None)
    assert only.sizes == (2,) and only.n_stages == 1
    full = _sched(n_clusters=10)
    assert full.sizes == (10,)


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(n_clusters=0), ValueError, "n_clusters"),
        (dict(n_clusters=11), ValueError, "n_clusters"),
        (dict(n_clusters=2.5), TypeError, "n_clusters"),
        (dict(bridge_clusters=2), ValueError, "increasing"),
        (dict(bridge_clusters=10), ValueError, "increasing"),
        (dict(bridge_clusters=[6, 4], rollback_at=(1, 2, 3)), ValueError, "increasing"),
        (dict(bridge_clusters="5"), TypeError, "bridge_clusters"),
        (dict(bridge_clusters=[4, 6]), ValueError, "rollback_at has 2 entries"),
        (dict(bridge_clusters=5, rollback_at=None), ValueError, "rollback_at"),
        (dict(rollback_at=(0,)), ValueError, "positive"),
        (dict(bridge_clusters=5, rollback_at=(150, 100)), ValueError, "increasing"),
        (dict(rollback_at=(1.5,)), TypeError, "ints"),
        (dict(patience=0), ValueError, "patience"),
        (dict(bridge_clusters=5, patience_from=(80,)), ValueError, "patience_from has 1"),
        (dict(patience_gain=-0.1), ValueError, "patience_gain must be a finite number >= 0"),
        (dict(patience_gain=float("nan")), ValueError, "patience_gain"),
        (dict(patience_gain="0.1"), TypeError, "patience_gain must be a number"),
    ],
)
def test_schedule_errors(kw: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        _sched(**kw)


def test_advance_at_trial_count() -> None:
    s = _sched(patience=None)
    hist = [(i, float(i)) for i in range(99)]
    assert not should_advance(s, stage=0, stage_start=0, trial_number=99, history=hist)
    assert should_advance(s, stage=0, stage_start=0, trial_number=100, history=hist)
    assert not should_advance(s, stage=1, stage_start=100, trial_number=500, history=hist)
    assert not should_advance(s, stage=0, stage_start=0, trial_number=100, history=[])


def test_advance_on_stagnation() -> None:
    s = _sched(bridge_clusters=5, patience=3, patience_from=(10, 20))
    improving = [(i, float(i)) for i in range(15)]
    assert not should_advance(s, stage=0, stage_start=0, trial_number=15, history=improving)
    flat = [(i, -float(i)) for i in range(9)]  # Best at trial 0, never improved.
    assert not should_advance(s, stage=0, stage_start=0, trial_number=9, history=flat)
    assert should_advance(s, stage=0, stage_start=0, trial_number=10, history=flat)
    # In stage 1 (opened by trial 10), the count restarts at the stage start.
    flat = [(i, -float(i)) for i in range(22)]
    assert not should_advance(s, stage=1, stage_start=20, trial_number=22, history=flat)
    flat = [(i, -float(i)) for i in range(23)]
    assert should_advance(s, stage=1, stage_start=20, trial_number=23, history=flat)
    # A new best restarts the count.
    late_best = [(i, -float(i)) for i in range(12)] + [(12, 5.0), (13, 0.0), (14, 0.0)]
    assert not should_advance(s, stage=0, stage_start=0, trial_number=15, history=late_best)
    assert should_advance(
        s, stage=0, stage_start=0, trial_number=16, history=[*late_best, (15, 0.0)]
    )


def test_rollback_bounds_margin_and_clip() -> None:
    top = np.array([[0.3, 0.15, 0.9], [0.5, 0.2, 0.98]])
    lows = np.array([0.1, 0.1, 0.1])
    highs = np.array([1.0, 1.0, 1.0])
    lower, upper = rollback_bounds(top, lows, highs)
    m = ROLLBACK_MARGIN * 0.9
    np.testing.assert_allclose(lower, [0.3 - m, 0.15 - m, 0.9 - m])
    np.testing.assert_allclose(upper, [0.5 + m, 0.2 + m, 1.0])
    assert np.all(lower >= lows) and np.all(upper <= highs)
    lower, upper = rollback_bounds(np.array([[0.1], [0.1]]), lows[:1], highs[:1])
    assert lower[0] == 0.1 and upper[0] == pytest.approx(0.1 + m)


def test_auto_patience_is_relative_to_each_stage() -> None:
    s = _sched(dims=40, n_clusters=3, bridge_clusters=12, patience="auto", patience_from=None)
    # max(6, 2 k) per stage that can end: 3 clusters -> 6, 12 clusters -> 24.
    assert s.patience == (6, 24) and s.patience_from is None
    assert _sched(patience=7).patience == (7,)
    with pytest.raises(ValueError, match="'auto'"):
        _sched(patience="soon")


def test_auto_patience_counts_every_trial() -> None:
    # Two clusters: patience max(6, 2 * 2) = 6 trials without a new best, those of the
    # start-up design too, as an int patience (the original BOCR's) counts them.
    s = _sched(patience="auto", patience_from=None)
    assert s.patience == (6,)
    flat = [(i, -float(i)) for i in range(20)]  # The best is trial 0.
    assert not should_advance(s, stage=0, stage_start=0, trial_number=6, history=flat[:6])
    assert should_advance(s, stage=0, stage_start=0, trial_number=7, history=flat[:7])
    s0 = _sched(patience=3, patience_from=None)
    assert should_advance(s0, stage=0, stage_start=0, trial_number=4, history=flat[:4])


def test_last_new_best_ignores_gains_below_the_fraction_of_the_lead() -> None:
    # Values 0, 10, then gains of 0.5 and 2 over the best. The median before the third
    # value is 5, so the best (10) leads it by 5: with patience_gain 0.2 a new best must beat
    # 10 by more than 1.
    ordered = [(0, 0.0), (1, 10.0), (2, 10.5), (3, 12.5)]
    assert last_new_best(ordered[:3], 0.0) == 2
    assert last_new_best(ordered[:3], 0.2) == 1
    # Small gains do not move the bar: 12.5 beats 10 (not 10.5) by more than the margin
    # (0.2 * (10 - median(0, 10, 10.5) = 10) = 0).
    assert last_new_best(ordered, 0.2) == 3
    assert last_new_best([(4, 1.0)], 0.5) == 4


def test_patience_gain_ends_a_stage_that_only_creeps() -> None:
    # Ten spread start-up values (best 9), then a gain of 0.001 every trial: with any gain a
    # new best the stage never stagnates; with patience_gain 0.05 a new best must gain
    # 0.05 * (9 - median), at least 0.05 here, so the creeping gains do not count.
    creep = [(i, float(i)) for i in range(10)]
    creep += [(10 + i, 9.0 + 0.001 * (i + 1)) for i in range(8)]
    any_gain = _sched(patience=6, patience_from=None, patience_gain=0.0)
    assert not should_advance(any_gain, stage=0, stage_start=0, trial_number=18, history=creep)
    small = _sched(patience=6, patience_from=None, patience_gain=0.05)
    assert small.patience_gain == 0.05
    assert not should_advance(small, stage=0, stage_start=0, trial_number=15, history=creep[:15])
    assert should_advance(small, stage=0, stage_start=0, trial_number=16, history=creep[:16])
