"""benchmarks/structure.py on the committed ResNet-20 checkpoint: L1 and probe p-values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import pruning
from benchmarks import structure


def test_structure_report_on_the_committed_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (pruning.COMMITTED_CHECKPOINTS / "resnet20-fashion-mnist-e6.pt").exists():
        pytest.skip("the committed ResNet-20 checkpoint is not in this tree")
    out = tmp_path / "structure.json"
    structure.main(
        [
            "--task",
            "resnet20",
            "--val-size",
            "200",
            "--n-calibration-images",
            "64",
            "--probe-images",
            "32",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert result["fingerprint"] == "32078429fd540304"
    assert result["n_layers"] == 9 and result["n_clusters"] == 3
    for key in ("p_l1_eu", "p_l1_js", "p_probe_st"):
        assert 0.0 < result[key] <= 1.0
    probe = result["probe"]
    assert probe["n_evaluations"] == 1 + 9 * 4 and probe["n_images"] == 32
    assert len(probe["drops"]) == 9 and all(len(d) == 4 for d in probe["drops"].values())
    assert "probe (37 evaluations of 32 images" in capsys.readouterr().out


def test_structure_refuses_a_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        structure.main(["--task", "resnet56", "--train-epochs", "99", "--work-dir", str(tmp_path)])
