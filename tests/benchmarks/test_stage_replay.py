"""Replaying the stage patience on recorded runs (``benchmarks/stage_replay.py``)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
import pytest

from benchmarks import stage_replay
from optuna_bocr import BOCRSampler

PREFIX = "pruning-net-flops0.5-val5000-scale"


def test_replay_at_the_sampler_gain_finds_the_stage_change_it_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A real BOCR run whose coarse stage stalls: the replay at the gain the run used must
    # open stage 1 at the trial where the sampler opened it.
    space = {f"x{i}": FloatDistribution(0.0, 1.0) for i in range(6)}
    features = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0], [5.0, 5.1]])
    sampler = BOCRSampler(
        space, features=features, n_clusters=2, seed=0, patience_gain=0.0, check_structure=False
    )
    path = tmp_path / "studies.log"
    study = optuna.create_study(
        study_name=f"{PREFIX}-bocr-seed0",
        storage=JournalStorage(JournalFileBackend(str(path))),
        sampler=sampler,
        direction="maximize",
    )
    study.set_user_attr("sampler", {"stage_sizes": [2, 6]})
    # Only x0 - x5 matters, which the two clusters cannot tell apart: the stage stalls.
    study.optimize(lambda t: t.suggest_float("x0", 0, 1) - t.suggest_float("x5", 0, 1), 16)
    opened = min(t.number for t in study.trials if t.user_attrs.get("bocr:stage") == 1)
    stage_replay.main(
        ["--journal", f"{path}:bocr", "--prefix", PREFIX, "--seeds", "1", "--gains", "0,0.5"]
    )
    out = capsys.readouterr().out
    assert f"seed   0 (16 trials): recorded {opened}, replayed {opened:>4}" in out
    assert "gain 0: median" in out and "0 seed(s) differ from gain 0" in out


def test_a_larger_gain_ends_a_creeping_stage_sooner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "raw.csv"
    # Spread start (best 9), then gains of 0.001: every trial a new best at gain 0.
    values = [float(i) for i in range(10)] + [9.0 + 0.001 * i for i in range(1, 11)]
    with open(raw, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "method", "seed", "trial", "value"])
        w.writerows(["t", "bocr", 0, i, v] for i, v in enumerate(values))
    stage_replay.main(
        ["--raw", f"{raw}:bocr", "--task", "t", "--stage-sizes", "3,27", "--seeds", "1",
         "--gains", "0,0.05"]
    )  # fmt: skip
    out = capsys.readouterr().out
    # Patience max(6, 2 x 3) = 6: never at gain 0 within the 20 trials; at 0.05 six trials
    # after trial 9, the last counted best.
    assert "seed   0 (20 trials): recorded ?, replayed    -   16" in out
    assert "gain 0.05: median 16 (1 of 1 within the trials); 1 seed(s) differ" in out
    with pytest.raises(SystemExit, match="--raw needs --task and --stage-sizes"):
        stage_replay.main(["--raw", f"{raw}:bocr", "--task", "t"])
    with pytest.raises(SystemExit, match="has no rows"):
        stage_replay.main(["--raw", f"{raw}:gp", "--task", "t", "--stage-sizes", "3,27"])
