"""Repeated networks counted over the trials of a journal storage."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
import pytest

from benchmarks import repeats
from optuna_bocr.keys import ACTUAL_PARAMS_KEY

PREFIX = "pruning-resnet20-flops0.5-val10-scale"


def _add(study: optuna.Study, ratios: dict[str, float], number_hint: int) -> None:
    dist = {n: FloatDistribution(0.1, 1.0) for n in ratios}
    study.add_trial(
        optuna.trial.create_trial(
            params=ratios,
            distributions=dist,
            value=90.0 + 0.01 * number_hint,
            user_attrs={ACTUAL_PARAMS_KEY: ratios},
        )
    )


def test_repeats_counts_networks_not_ratios(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    widths = repeats.layer_widths("resnet20")
    assert list(widths.values()) == [16] * 3 + [32] * 3 + [64] * 3
    path = tmp_path / "studies.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(
        storage=storage, study_name=f"{PREFIX}-bocr-trust-seed3", direction="maximize"
    )
    base = dict.fromkeys(widths, 0.5)
    _add(study, base, 0)
    _add(study, {n: r + 0.005 for n, r in base.items()}, 1)  # under half a channel: same
    _add(study, dict(base, **{"layer1.0.conv2": 0.75}), 2)  # 4 channels more: new
    _add(study, {n: r - 0.005 for n, r in base.items()}, 3)
    other = optuna.create_study(
        storage=storage, study_name=f"{PREFIX}-cmaes-seed3", direction="maximize"
    )
    _add(other, base, 0)
    rows = repeats.repeats(storage, "resnet20", ["bocr-trust", "cmaes"], late_from=2)
    assert rows == {
        "bocr-trust": [{"seed": 3, "trials": 4, "repeats": 2, "late": 1}],
        "cmaes": [{"seed": 3, "trials": 1, "repeats": 0, "late": 0}],
    }
    assert repeats.repeats(storage, "resnet56", ["bocr-trust"]) == {}
    repeats.main(["--storage", str(path), "--task", "resnet20", "--methods", "bocr-trust"])
    assert "| bocr-trust | 1 | 4 | 2 (2) | 0 |" in capsys.readouterr().out  # late: from 100
    with pytest.raises(SystemExit):
        repeats.main(["--storage", str(path), "--task", "resnet56", "--methods", "bocr-trust"])
    assert "no study of bocr-trust on resnet56" in capsys.readouterr().err
