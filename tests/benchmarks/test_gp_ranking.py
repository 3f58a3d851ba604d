"""How well BOCR's GP ranks a study's next trials (``benchmarks/gp_ranking.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
import pytest

from benchmarks import gp_ranking

PREFIX = "pruning-net-flops0.5-val5000-scale"
NAMES = [f"layer{i}" for i in range(4)]


def _write(
    path: Path, method: str, seed: int, value_of: Callable[[np.ndarray], float], n: int = 40
) -> None:
    """A study of ``n`` random ratios in [0.1, 1] scored by ``value_of(x)``."""
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(
        study_name=f"{PREFIX}-{method}-seed{seed}", storage=storage, direction="maximize"
    )
    rng = np.random.default_rng(seed)
    dist = FloatDistribution(0.1, 1.0)
    for _ in range(n):
        x = rng.uniform(0.1, 1.0, size=len(NAMES))
        actual = np.clip(0.8 * x, 0.1, 1.0)  # as a budget rule would scale them
        study.add_trial(
            optuna.trial.create_trial(
                params=dict(zip(NAMES, x, strict=True)),
                distributions={name: dist for name in NAMES},
                value=value_of(x),
                user_attrs={"actual_params": dict(zip(NAMES, actual, strict=True))},
            )
        )


def test_a_smooth_objective_is_ranked_and_noise_is_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "studies.log"
    noise = np.random.default_rng(99)
    for seed in (0, 1):
        _write(log, "smooth", seed, lambda x: float(np.sum(x)))
        _write(log, "noise", seed, lambda x: float(noise.normal()))
    gp_ranking.main(
        ["--rows", f"{log}:smooth,noise", "--prefix", PREFIX, "--seeds", "0-1",
         "--windows", "20:40,30:60"]
    )  # fmt: skip
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[3:]]
    by = {(r[0].strip("| "), r[1]): r for r in rows}
    assert float(by[("smooth", "20:40")][2]) > 0.8
    assert abs(float(by[("noise", "20:40")][2])) < 0.6
    assert by[("smooth", "30:60")][2:] == ["-", "-", "- |"]  # 40 trials: no window to 60


def test_window_rank_reads_the_actual_ratios(tmp_path: Path) -> None:
    log = tmp_path / "studies.log"
    _write(log, "m", 0, lambda x: float(x[0]))
    storage = JournalStorage(JournalFileBackend(str(log)))
    trials = optuna.load_study(study_name=f"{PREFIX}-m-seed0", storage=storage).trials
    proposed = gp_ranking.unit_inputs(trials)
    actual = gp_ranking.unit_inputs(trials, actual=True)
    assert proposed.min() >= 0.0 and proposed.max() <= 1.0
    assert not np.allclose(proposed, actual)
    rank = gp_ranking.window_rank(trials, 20, 40, actual=True)
    assert rank is not None and rank[0] > 0.8 and rank[1] > 0.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rows", "nojournal"], "expected JOURNAL:METHOD"),
        (["--rows", "/nonexistent/studies.log:bocr"], "no such journal file"),
        (["--rows", "{log}:bocr", "--windows", "10:5"], "a window is START:STOP"),
        (["--rows", "{log}:absent"], "no study"),
        (["--rows", "{log}:bocr", "--seeds", "0"], "give N >= 1"),
    ],
)
def test_bad_input_is_refused_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    log = tmp_path / "studies.log"
    _write(log, "bocr", 0, lambda x: float(x[0]), n=5)
    args = [a.format(log=log) for a in args]
    with pytest.raises(SystemExit, match=message):
        gp_ranking.main(["--prefix", PREFIX, "--seeds", "1", *args])


def test_tied_lengthscales_share_one_value_per_group(tmp_path: Path) -> None:
    log = tmp_path / "studies.log"
    _write(log, "m", 0, lambda x: float(np.sum(x)))
    storage = JournalStorage(JournalFileBackend(str(log)))
    trials = optuna.load_study(study_name=f"{PREFIX}-m-seed0", storage=storage).trials
    # a clustered first trial: layers 0-1 share one value, layers 2-3 another
    first = dict(zip(NAMES, [0.3, 0.3, 0.7, 0.7], strict=True))
    trials[0] = optuna.trial.create_trial(
        params=first, distributions=trials[0].distributions, value=float(sum(first.values()))
    )
    assert gp_ranking.lengthscale_groups(trials, "ard") is None
    assert gp_ranking.lengthscale_groups(trials, "one") == [0, 0, 0, 0]
    assert gp_ranking.lengthscale_groups(trials, "clusters") == [0, 0, 1, 1]
    for mode in ("one", "clusters"):
        rank = gp_ranking.window_rank(trials, 20, 40, lengthscales=mode)
        assert rank is not None and rank[0] > 0.8


def test_a_missing_study_is_refused_before_any_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "studies.log"
    _write(log, "bocr", 0, lambda x: float(x[0]), n=10)
    with pytest.raises(SystemExit, match="no study .*-absent-seed"):
        gp_ranking.main(
            ["--rows", f"{log}:bocr,absent", "--prefix", PREFIX, "--seeds", "1",
             "--windows", "5:10"]
        )  # fmt: skip
    assert "fit on" not in capsys.readouterr().err


def test_warped_values_rank_a_long_tailed_objective(tmp_path: Path) -> None:
    # Accuracy-like: a gentle slope where the first ratio is large, a cliff where it is small.
    log = tmp_path / "studies.log"
    _write(log, "m", 0, lambda x: float(np.sum(x) - (40.0 if x[0] < 0.3 else 0.0)), n=60)
    storage = JournalStorage(JournalFileBackend(str(log)))
    trials = optuna.load_study(study_name=f"{PREFIX}-m-seed0", storage=storage).trials
    ranks = {
        kind: gp_ranking.window_rank(trials, 30, 60, outcome=kind)
        for kind in ("standardize", "yeo-johnson", "rank")
    }
    rho = {kind: r[0] for kind, r in ranks.items() if r is not None}
    assert len(rho) == 3 and rho["standardize"] > 0.5
    # The cliff sets the standardised scale; either warp ranks the slope's trials better.
    assert rho["yeo-johnson"] > rho["standardize"] + 0.03
    assert rho["rank"] > rho["standardize"] + 0.03
