"""Comparing studies kept in two journal files (``benchmarks/journal_pairs.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
import pytest

from benchmarks import journal_pairs
from benchmarks._plots import colour_order

PREFIX = "pruning-net-flops0.5-val5000-scale"


def _write(path: Path, method: str, runs: dict[int, list[float]]) -> None:
    storage = JournalStorage(JournalFileBackend(str(path)))
    for seed, values in runs.items():
        study = optuna.create_study(
            study_name=f"{PREFIX}-{method}-seed{seed}", storage=storage, direction="maximize"
        )
        for v in values:
            study.add_trial(optuna.trial.create_trial(value=v))


def test_medians_paired_differences_and_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cpu, gpu = tmp_path / "cpu.log", tmp_path / "gpu.log"
    _write(cpu, "bocr", {0: [1.0, 3.0, 3.0], 1: [2.0, 2.0, 5.0]})
    _write(gpu, "gp", {0: [1.0, 1.0, 2.0, 4.0], 1: [0.0, 1.0, 1.0, 1.0], 2: [9.0] * 4})
    journal_pairs.main(
        [
            "--reference", f"{cpu}:bocr", "--against", f"{gpu}:gp", "--prefix", PREFIX,
            "--seeds", "0-1", "--counts", "2,3", "--target-at", "4", "--target-seeds", "0-2",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    # gp's trial-4 median over seeds 0-2 is 4.0; bocr reaches it on seed 1 at trial 3
    assert "gp's median at trial 4: 4.0" in out
    assert "bocr             median @2 2.50 @3 4.00 | first reaching the target: [None, 3]" in out
    # at 2 trials: 3-1 and 2-1 -> +1.50; at 3 trials: 3-2 and 5-1 -> +2.50, both seeds ahead
    assert "bocr minus gp: @2 +1.50" in out
    assert "@3 +2.50" in out and "(2/2)" in out


def test_a_method_short_of_seeds_is_reported_over_those_it_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cpu, gpu = tmp_path / "cpu.log", tmp_path / "gpu.log"
    _write(cpu, "bocr", {0: [1.0, 3.0], 1: [2.0, 5.0]})
    _write(gpu, "gp", {0: [1.0, 2.0], 1: [4.0]})  # seed 1 has one trial only
    journal_pairs.main(
        [
            "--reference", f"{cpu}:bocr", "--against", f"{gpu}:gp,tpe", "--prefix", PREFIX,
            "--seeds", "0-1", "--counts", "1,2", "--target-at", "2",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "gp's median at trial 2: 2.0" in out
    assert "gp               median @1 2.50 @2 2.00 (1 of 2 seeds)" in out
    assert "tpe              median @1 - @2 - | first reaching the target: [None, None]" in out
    # at 1 trial: 1-1 and 2-4 -> -1.00; at 2 trials only seed 0 pairs: 3-2
    assert "bocr minus gp: @1 -1.00 [-2.00, +0.00] (0/2); @2 +1.00 [+1.00, +1.00] (1/1)" in out
    assert "bocr minus tpe: no shared seed" in out


def test_rows_merge_journals_by_seed_and_a_plus_row_prefers_its_first_method(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cpu, gpu = tmp_path / "cpu.log", tmp_path / "gpu.log"
    _write(cpu, "bocr-new", {1: [4.0, 4.0], 2: [6.0, 6.0]})  # seed 1 run again, seed 2 added
    _write(cpu, "bocr", {0: [1.0, 3.0], 1: [2.0, 2.0]})
    _write(gpu, "gp", {0: [1.0, 2.0], 1: [0.0, 1.0]})
    _write(cpu, "gp", {1: [8.0, 8.0], 2: [0.0, 5.0]})  # seed 1 also on the GPU: the GPU's wins
    journal_pairs.main(
        [
            "--reference", f"{cpu}:bocr-new+bocr", "--against", f"{gpu}:gp",
            "--against", f"{cpu}:gp", "--prefix", PREFIX, "--seeds", "0-2", "--counts", "2",
            "--target-at", "2",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    # reference: seed 0 from bocr (3), seeds 1-2 from bocr-new (4, 6); gp: 2, 1 (GPU), 5 (CPU)
    assert "seeds [0, 1, 2]; gp's median at trial 2: 2.0" in out
    assert "bocr-new+bocr    median @2 4.00" in out
    assert "gp               median @2 2.00" in out
    # 3-2, 4-1, 6-5 -> +1.67, every seed ahead
    assert "bocr-new+bocr minus gp: @2 +1.67" in out and "(3/3)" in out


def test_plot_draws_the_curves_and_refuses_other_files_first(tmp_path: Path) -> None:
    cpu, gpu = tmp_path / "cpu.log", tmp_path / "gpu.log"
    _write(cpu, "bocr", {0: [1.0, 3.0, 3.0], 1: [2.0, 2.0, 5.0]})
    _write(gpu, "gp", {0: [1.0, 1.0, 2.0], 1: [0.0, 1.0, 1.0]})
    common = ["--reference", f"{cpu}:bocr", "--against", f"{gpu}:gp", "--prefix", PREFIX,
              "--seeds", "0-1", "--counts", "3", "--target-at", "3"]  # fmt: skip
    with pytest.raises(SystemExit, match="--plot writes a PNG file"):
        journal_pairs.main([*common, "--plot", str(tmp_path / "curves.pdf")])
    assert not (tmp_path / "curves.pdf").exists()
    png = tmp_path / "out" / "curves.png"
    journal_pairs.main([*common, "--plot", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_draws_a_shorter_run_to_the_trial_all_its_seeds_reach(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cpu = tmp_path / "cpu.log"
    _write(cpu, "bocr-paper", {0: [1.0, 2.0, 3.0, 4.0], 1: [2.0, 2.0, 2.0, 5.0]})
    _write(cpu, "bocr", {0: [1.0, 3.0, 3.0], 1: [2.0, 2.0]})  # ran to fewer trials
    _write(cpu, "gp", {0: [1.0, 1.0, 2.0, 2.0], 1: [0.0]})  # seed 0 alone reaches 4
    png = tmp_path / "curves.png"
    journal_pairs.main(
        [
            "--reference", f"{cpu}:bocr-paper", "--against", f"{cpu}:bocr,gp", "--prefix",
            PREFIX, "--seeds", "0-1", "--counts", "2,4", "--target-at", "4", "--plot", str(png),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    # bocr has no seed at 4 trials: both its seeds to trial 2; gp keeps its seed that has 4
    drawn = "bocr-paper to trial 4 (2 seeds), bocr to trial 2 (2 seeds), gp to trial 4 (1 seed)"
    assert f"plot: {drawn}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_up_to_ten_methods_of_one_figure_never_share_a_colour() -> None:
    # 'gp' and 'bocr-paper' are 30 places apart in KNOWN_METHODS, one tab10 colour if
    # indexed there; indexed among the figure's methods, each of these seven has its own
    methods = ["bocr-key-any", "bocr-paper", "bocr-trust", "cmaes", "gp", "tpe", "random"]
    order = colour_order(reversed(methods))
    assert sorted(order) == sorted(methods)
    assert order[:2] == ["gp", "tpe"]  # KNOWN_METHODS's order among the drawn ones
    assert colour_order(["zz-new", "gp", "aa-new"]) == ["gp", "aa-new", "zz-new"]


def test_refuses_target_seeds_named_twice_before_reading_a_journal(tmp_path: Path) -> None:
    missing = tmp_path / "none.log"
    with pytest.raises(SystemExit, match=r"--target-seeds '0,1,0' names seed\(s\) \[0\] twice"):
        journal_pairs.main(["--reference", f"{missing}:bocr", "--against", f"{missing}:gp",
                            "--prefix", PREFIX, "--target-seeds", "0,1,0"])  # fmt: skip


def test_refuses_a_missing_journal_without_creating_it(tmp_path: Path) -> None:
    missing = tmp_path / "none.log"
    with pytest.raises(SystemExit, match="no such journal file"):
        journal_pairs.main(["--reference", f"{missing}:bocr", "--against", f"{missing}:gp",
                            "--prefix", PREFIX])  # fmt: skip
    assert not missing.exists()


def _report(folder: Path, tests: dict[str, tuple[int, float]], size: int = 10000) -> None:
    folder.mkdir(parents=True)
    seeds = {
        f"{PREFIX}-{name}": {"trial": trial, "test_top1": top1, "key": f"{trial}|test{size}"}
        for name, (trial, top1) in tests.items()
    }
    (folder / "final_net.json").write_text(json.dumps({"seeds": seeds}))


def test_tests_pair_the_test_split_of_each_seeds_best_and_name_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cpu, gpu = tmp_path / "cpu.log", tmp_path / "gpu.log"
    _write(cpu, "bocr", {0: [1.0, 3.0, 3.0, 9.0], 1: [2.0, 2.0, 5.0], 2: [1.0, 2.0, 3.0]})
    _write(gpu, "gp", {0: [1.0, 1.0, 2.0], 1: [0.0, 1.0, 1.0], 2: [4.0, 1.0, 1.0]})
    # best of the first 3 trials: bocr trials 1 (the first of two 3.0s), 2, 2; gp 2, 1, 0
    _report(tmp_path / "cpu-t3", {"bocr-seed0": (1, 80.0), "bocr-seed1": (2, 82.0)})
    _report(
        tmp_path / "gpu-t3",
        {"gp-seed0": (2, 79.0), "gp-seed1": (1, 79.5), "gp-seed2": (0, 70.0),
         "bocr-seed2": (1, 99.0)},  # a test of another trial (another budget): not counted
    )  # fmt: skip
    args = ["--reference", f"{cpu}:bocr", "--against", f"{gpu}:gp", "--prefix", PREFIX,
            "--seeds", "0-2", "--counts", "3", "--target-at", "3"]  # fmt: skip
    with pytest.raises(SystemExit, match="no final_<task>.json"):
        journal_pairs.main([*args, "--tests", str(tmp_path / "none")])
    journal_pairs.main(
        [*args, "--tests", str(tmp_path / "cpu-t3"), "--tests", str(tmp_path / "gpu-t3")]
    )
    out = capsys.readouterr().out
    assert "test split, each seed's best of its first 3 trials:" in out
    assert "bocr             test median 81.00 (2 of 3 seeds)" in out
    assert f"no test of {PREFIX}-bocr-seed2 trial 2" in out
    assert "gp               test median 79.00 (3 of 3 seeds)" in out
    # seeds 0 and 1 pair: 80-79 and 82-79.5 -> +1.75, both ahead
    assert "bocr minus gp: test +1.75" in out and "(2/2)" in out
    # A folder tested on another number of test images does not pair with these.
    _report(tmp_path / "small", {"gp-seed2": (0, 60.0)}, size=2000)
    with pytest.raises(SystemExit, match=r"different test splits \(10000 test images in .*cpu-t3"):
        journal_pairs.main([*args, "--tests", str(tmp_path / "cpu-t3"),
                            "--tests", str(tmp_path / "small")])  # fmt: skip
