"""Trust-region sides replayed over the trials of a journal storage."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
import pytest

from benchmarks import box_yield
from optuna_bocr.keys import STAGE_KEY
from optuna_bocr.sampler._gp import MIN_NOISE
from optuna_bocr.sampler._storage import GP_ATTR

PREFIX = "pruning-toy-flops0.5-val10-scale"
NAMES = [f"p{i}" for i in range(6)]  # 6 variables: the box halves after 4 failures


def _storage(path: Path, stage1_values: list[float], noise_variance: float | None = None) -> str:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(
        storage=storage, study_name=f"{PREFIX}-bocr-trust-seed0", direction="maximize"
    )
    dist = {n: FloatDistribution(0.1, 1.0) for n in NAMES}
    values = [(0, v) for v in (80.0, 85.0, 90.0)] + [(1, v) for v in stage1_values]
    for stage, v in values:
        fit = {}
        if noise_variance is not None and stage == 1:
            # Raw hyperparameters as the sampler stores them: the noise through softplus.
            raw = math.log(math.expm1(noise_variance - MIN_NOISE))
            fit = {GP_ATTR: {"stage": 1, "theta": [raw, 0.0, 0.5] + [0.0] * len(NAMES)}}
        study.add_trial(
            optuna.trial.create_trial(
                params={n: 0.5 for n in NAMES},
                distributions=dist,
                value=v,
                user_attrs={STAGE_KEY: stage},
                system_attrs=fit,
            )
        )
    return str(path)


def test_each_trial_gets_the_side_it_was_proposed_in(tmp_path: Path) -> None:
    # Four failures at the first side halve it; the fifth trial, a new best, is in the half.
    path = _storage(tmp_path / "studies.log", [89.0, 88.0, 90.0, 87.0, 92.0, 91.0])
    out = tmp_path / "yield.json"
    box_yield.main(["--storage", path, "--init-length", "0.8", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["studies"] == 1
    rows = {r["side"]: r for r in result["rows"]}
    assert set(rows) == {0.4, 0.8}
    assert (rows[0.8]["trials"], rows[0.8]["new_bests"]) == (4, 0)
    assert rows[0.8]["median_below_best"] == pytest.approx(-1.5)
    assert (rows[0.4]["trials"], rows[0.4]["new_bests"]) == (2, 1)
    # The first 7 trials only: the first side's four, and one in the half.
    box_yield.main(
        ["--storage", path, "--n-trials", "8", "--init-length", "0.8", "--out", str(out)]
    )
    rows = {r["side"]: r for r in json.loads(out.read_text())["rows"]}
    assert (rows[0.8]["trials"], rows[0.4]["trials"], rows[0.4]["new_bests"]) == (4, 1, 1)
    # The same trials replayed from a first side of 0.2.
    box_yield.main(["--storage", path, "--init-length", "0.2", "--out", str(out)])
    assert {r["side"] for r in json.loads(out.read_text())["rows"]} == {0.1, 0.2}
    assert json.loads(out.read_text())["gp_noise"] is None  # no GP fit stored


def test_trials_after_a_restart_are_counted_at_the_side_it_started_again_at(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 20 failures halve the side five times (0.8 to 0.025 < 1/32): the box starts again;
    # of the two trials after it, the second is a new best.
    path = _storage(tmp_path / "studies.log", [89.0] * 20 + [88.0, 95.0])
    out = tmp_path / "yield.json"
    box_yield.main(["--storage", path, "--out", str(out)])
    rows = {r["side"]: r for r in json.loads(out.read_text())["rows"]}
    assert (rows[0.8]["trials"], rows[0.8]["new_bests"]) == (6, 1)
    assert (rows[0.8]["trials_after_restart"], rows[0.8]["new_bests_after_restart"]) == (2, 1)
    assert all(rows[side]["trials_after_restart"] == 0 for side in (0.05, 0.1, 0.2, 0.4))
    assert "| new bests after a restart |" in capsys.readouterr().out
    # Replayed as a study that started again at 0.4.
    box_yield.main(["--storage", path, "--restart-length", "0.4", "--out", str(out)])
    result = json.loads(out.read_text())
    rows = {r["side"]: r for r in result["rows"]}
    assert result["restart_length"] == 0.4
    assert (rows[0.8]["trials"], rows[0.8]["trials_after_restart"]) == (4, 0)
    assert (rows[0.4]["trials"], rows[0.4]["trials_after_restart"]) == (6, 2)
    assert rows[0.4]["new_bests_after_restart"] == 1
    with pytest.raises(SystemExit):
        box_yield.main(["--storage", path, "--restart-length", "0"])
    assert "--restart-length must be in (0, 2]" in capsys.readouterr().err


def test_the_gp_noise_is_read_in_the_objectives_units(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stage1 = [89.0, 88.0, 90.0]
    path = _storage(tmp_path / "studies.log", stage1, noise_variance=0.25)
    out = tmp_path / "yield.json"
    box_yield.main(["--storage", path, "--out", str(out)])
    values = [80.0, 85.0, 90.0, *stage1]
    # Noise standard deviation 0.5 of the values standardised over the trials before each.
    expected = [0.5 * float(np.std(values[:i])) for i in range(3, 6)]
    noise = json.loads(out.read_text())["gp_noise"]
    assert noise["trials"] == 3
    assert noise["median"] == pytest.approx(float(np.median(expected)))
    assert "GP noise (standard deviation, objective's units) over 3 trials" in (
        capsys.readouterr().out
    )


def test_missing_storage_and_no_later_stage_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        box_yield.main(["--storage", str(tmp_path / "none.log")])
    assert "no storage file" in capsys.readouterr().err
    path = _storage(tmp_path / "studies.log", [])
    with pytest.raises(SystemExit):
        box_yield.main(["--storage", path])
    err = capsys.readouterr().err
    assert "no study of bocr-trust" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        box_yield.main(["--storage", path, "--methods", "cmaes"])
    assert "BOCR methods" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        box_yield.main(["--storage", path, "--n-trials", "0"])
    assert "--n-trials must be at least 1" in capsys.readouterr().err
