"""The probe's additive model ranked against the trials of a journal storage."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
import pytest

from benchmarks import probe_ranking
from benchmarks._probe_start import PROBE_KEY
from optuna_bocr.keys import ACTUAL_PARAMS_KEY

PREFIX = "pruning-toy-flops0.5-val10-scale"
RECORD = {
    "probe_ratios": [0.25, 0.5],
    "probe_images": 10,
    "drops": {"a": [8.0, 2.0], "b": [1.0, 0.5]},
    "divergences": {"a": [0.5, 0.1], "b": [0.2, 0.1]},
}


def _storage(path: Path, *, with_probe: bool = True) -> str:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    probe = optuna.create_study(storage=storage, study_name=f"{PREFIX}-bocr-kl-seed0")
    if with_probe:
        probe.set_user_attr(PROBE_KEY, RECORD)
    study = optuna.create_study(storage=storage, study_name=f"{PREFIX}-cmaes-seed0")
    dist = {"a": FloatDistribution(0.1, 1.0), "b": FloatDistribution(0.1, 1.0)}
    # Layer a is the sensitive one: top-1 falls as a is pruned harder, whatever b does, so
    # the model ranks these trials exactly (the best quarter too).
    for i, a in enumerate([0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]):
        b = 1.0 - 0.05 * (i % 3)
        study.add_trial(
            optuna.trial.create_trial(
                params={"a": a, "b": b},
                distributions=dist,
                value=80.0 + 10.0 * a,
                user_attrs={ACTUAL_PARAMS_KEY: {"a": a, "b": b}},
            )
        )
    return str(path)


def test_a_model_that_orders_the_trials_correlates_fully(tmp_path: Path) -> None:
    path = _storage(tmp_path / "studies.log")
    out = tmp_path / "rank.json"
    probe_ranking.main(["--storage", path, "--methods", "cmaes", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["n_trials"] == 8 and result["n_top"] == 2
    assert result["points lost"]["spearman_all"] == pytest.approx(1.0)
    assert result["points lost"]["spearman_top"] == pytest.approx(1.0)
    assert result["divergence"]["spearman_all"] == pytest.approx(1.0)


def test_no_probe_record_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _storage(tmp_path / "studies.log", with_probe=False)
    with pytest.raises(SystemExit):
        probe_ranking.main(["--storage", path, "--methods", "cmaes"])
    assert "records a probe" in capsys.readouterr().err


def test_a_missing_storage_file_is_refused_and_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none" / "studies.log"
    with pytest.raises(SystemExit):
        probe_ranking.main(["--storage", str(missing)])
    assert "no storage file" in capsys.readouterr().err
    assert not missing.parent.exists()


def test_methods_without_trials_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _storage(tmp_path / "studies.log")
    with pytest.raises(SystemExit):
        probe_ranking.main(["--storage", path, "--methods", "gp"])
    assert "COMPLETE trials" in capsys.readouterr().err
