"""Comparing synthetic rows kept in two runs' raw.csv (``benchmarks/synthetic_pairs.py``)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from benchmarks import synthetic_pairs

FIELDS = ["task", "method", "seed", "trial", "normalised_regret"]


def _write(path: Path, method: str, runs: dict[int, list[float]], task: str = "t27") -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for seed, regrets in runs.items():
            for trial, r in enumerate(regrets):
                w.writerow(
                    dict(task=task, method=method, seed=seed, trial=trial, normalised_regret=r)
                )


def test_medians_and_paired_differences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new, old = tmp_path / "new.csv", tmp_path / "old.csv"
    _write(new, "one", {0: [0.5, 0.1, 0.05], 1: [0.4, 0.3, 0.2], 2: [0.9, 0.9, 0.9]})
    _write(old, "ard", {0: [0.5, 0.2, 0.15], 1: [0.4, 0.4, 0.4], 3: [0.0, 0.0, 0.0]})
    synthetic_pairs.main(
        ["--task", "t27", "--seeds", "0-1", "--counts", "2,3",
         "--reference", f"{new}:one", "--against", f"{old}:ard"]
    )  # fmt: skip
    out = capsys.readouterr().out
    lines = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("|")}
    # seeds 0-1 only: medians 0.2 and 0.125 at trial 3
    assert "| 2 | 0.2000 | 0.1250 |" in lines["one"]
    assert "| 2 | 0.3000 | 0.2750 |" in lines["ard"]
    # ard minus one at trial 3: +0.10 and +0.20, both seeds in favour of the reference
    assert "+0.1500 [+0.1000, +0.2000] (2/2)" in lines["ard"]


def test_rows_that_are_not_there_are_refused(tmp_path: Path) -> None:
    new = tmp_path / "new.csv"
    _write(new, "one", {0: [0.5]})
    with pytest.raises(SystemExit, match="not a file"):
        synthetic_pairs.main(["--task", "t27", "--reference", f"{tmp_path / 'x.csv'}:one"])
    with pytest.raises(SystemExit, match="no rows of task 't27', method 'two'"):
        synthetic_pairs.main(["--task", "t27", "--reference", f"{new}:two"])
    with pytest.raises(SystemExit, match="RAW_CSV:METHOD"):
        synthetic_pairs.main(["--task", "t27", "--reference", str(new)])
