"""The probe start: its additive model of the points lost, and where it is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks._probe_start import predicted_loss

RATIOS = (0.25, 0.5)
DROPS = {"a": np.array([4.0, 1.0]), "b": np.array([2.0, -0.5])}


def test_losses_add_up_over_the_layers_and_vanish_unpruned() -> None:
    assert predicted_loss(DROPS, RATIOS, {"a": 1.0, "b": 1.0}) == 0.0
    assert predicted_loss(DROPS, RATIOS, {"a": 0.25, "b": 1.0}) == pytest.approx(4.0)
    assert predicted_loss(DROPS, RATIOS, {"a": 0.25, "b": 0.25}) == pytest.approx(6.0)


def test_between_the_probed_ratios_the_loss_is_interpolated() -> None:
    assert predicted_loss(DROPS, RATIOS, {"a": 0.375, "b": 1.0}) == pytest.approx(2.5)
    assert predicted_loss(DROPS, RATIOS, {"a": 0.75, "b": 1.0}) == pytest.approx(0.5)


def test_a_gain_counts_as_no_loss_and_harsher_ratios_extrapolate() -> None:
    # b gained accuracy at 0.5: clipped to 0, so between 0.5 and 1 it loses nothing.
    assert predicted_loss(DROPS, RATIOS, {"a": 1.0, "b": 0.75}) == 0.0
    # Below the smallest probed ratio the last segment's slope goes on: a at 0.1 loses
    # 4 + (4 - 1) / 0.25 * 0.15 = 5.8 points.
    assert predicted_loss(DROPS, RATIOS, {"a": 0.1, "b": 1.0}) == pytest.approx(5.8)


@pytest.mark.parametrize("method", ["bocr-probe", "bocr-kl", "bocr-width"])
def test_the_synthetic_benchmark_refuses_the_probe_methods(tmp_path: Path, method: str) -> None:
    from benchmarks import synthetic

    argv = ["--methods", method, "--tasks", "grouped27", "--seeds", "1"]
    with pytest.raises(SystemExit, match=rf"unknown value\(s\) \['{method}'\]"):
        synthetic.main([*argv, "--n-trials", "2", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # refused before any work or write
