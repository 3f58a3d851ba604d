"""The pruning benchmark script end to end on a tiny budget: report, export, resume."""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import optuna
from optuna.trial import TrialState
import pytest
import torch

from optuna_bocr.data import DataSplits
from optuna_bocr.keys import CHECKPOINT_SHA256_KEY


@pytest.fixture(scope="module")
def pruning_script() -> ModuleType:
    return importlib.import_module("benchmarks.pruning")


def _argv(tmp_path: Path, n_trials: int, *extra: str) -> list[str]:
    return [
        "--tasks",
        "resnet20",
        "--methods",
        "bocr,gp",
        "--seeds",
        "1",
        "--n-trials",
        str(n_trials),
        "--train-epochs",
        "1",
        "--train-max-images",
        "256",
        "--val-size",
        "200",
        "--n-calibration-images",
        "128",
        "--test-size",
        "200",
        "--finetune-max-images",
        "128",
        "--work-dir",
        str(tmp_path / "work"),
        "--storage",
        f"sqlite:///{tmp_path / 'studies.db'}",
        "--out",
        str(tmp_path / "out"),
        *extra,
    ]


def test_pruning_benchmark_runs_reports_and_resumes(
    fashion_splits: DataSplits,  # skips when Fashion-MNIST is not installed
    pruning_script: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pruning_script.main(_argv(tmp_path, 3))
    out = tmp_path / "out"
    printed = capsys.readouterr().out
    assert "[train] resnet20" in printed

    # Report: one row per method, every trial in the CSV, a plot, the final evaluation.
    results = (out / "results.md").read_text()
    assert "| BOCR defaults | 1 |" in results
    assert "| GPSampler | 1 |" in results
    assert "stage changes" in results
    assert "BOCR defaults minus each method, paired by seed" in results
    assert "| GPSampler | " in results.split("paired by seed")[1]
    with open(out / "raw.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["trial"]) for r in rows} == {
        (m, str(i)) for m in ("bocr", "gp") for i in range(3)
    }
    assert all(0.0 <= float(r["val_top1"]) <= 100.0 for r in rows)
    assert (out / "pruning.png").stat().st_size > 0
    final = json.loads((out / "final_resnet20.json").read_text())
    for method in ("bocr", "gp"):
        entry = final[method]
        assert 0.0 <= entry["test_top1"] <= 100.0
        assert entry["test_top1_finetuned"] is not None
        assert entry["flops_ratio"] <= 0.5 + 1e-6

    # Each seed's best trial tested on its own (no search runs with --report-only): with one
    # seed that is the method's best model, so its test top-1 before fine-tuning is the same.
    pruning_script.main(_argv(tmp_path, 3, "--report-only", "--seed-tests"))
    printed = capsys.readouterr().out
    assert "[start]" not in printed and "[test] pruning-resnet20" in printed
    final = json.loads((out / "final_resnet20.json").read_text())
    for method in ("bocr", "gp"):
        rec = final["seeds"][f"pruning-resnet20-flops0.5-val200-{method}-seed0"]
        assert (rec["trial"], rec["test_top1"]) == (
            final[method]["trial"],
            final[method]["test_top1"],
        )
    results = (out / "results.md").read_text()
    assert "of each seed's best trial" in results
    assert "| GPSampler | 1 |" in results.split("of each seed's best trial")[1]

    # A crash leaves a RUNNING trial behind; the same command with a larger budget marks it
    # FAIL, keeps the finished trials and runs only the missing one.
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    name = "pruning-resnet20-flops0.5-val200-gp-seed0"
    study = optuna.load_study(study_name=name, storage=storage)
    before = [(t.params, t.value) for t in study.get_trials(states=(TrialState.COMPLETE,))]
    study.ask()
    pruning_script.main(_argv(tmp_path, 4, "--skip-final"))
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]
    assert [(t.params, t.value) for t in trials[:3]] == before
    assert "[train]" not in capsys.readouterr().out  # the checkpoint is reused

    # A report at a smaller budget reads each study as it stood at that budget.
    pruning_script.main(_argv(tmp_path, 3, "--report-only", "--skip-final"))
    with open(out / "raw.csv") as f:
        gp_trials = [r["trial"] for r in csv.DictReader(f) if r["method"] == "gp"]
    assert gp_trials == ["0", "1", "2"]

    # Failed trials of an earlier run (a crash, a missing package) do not count against the
    # next run's limit on failures: it runs its budget and reports no stop.
    study = optuna.load_study(study_name=name, storage=storage)
    for _ in range(6):
        study.tell(study.ask(), state=TrialState.FAIL)
    pruning_script.main(_argv(tmp_path, 5, "--skip-final"))
    assert "[stop]" not in capsys.readouterr().out
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 5

    # A lost checkpoint is trained again bit for bit (seeded weights and data order), so the
    # studies resume; a checkpoint that differs from the one a study was run with is refused.
    checkpoint = next((tmp_path / "work" / "checkpoints").glob("resnet20-*.pt"))
    recorded = optuna.load_study(study_name=name, storage=storage).user_attrs[
        CHECKPOINT_SHA256_KEY
    ]
    assert recorded == pruning_script.checkpoint_fingerprint(checkpoint)
    checkpoint.unlink()
    pruning_script.main(_argv(tmp_path, 4, "--skip-final"))
    assert "[train] resnet20" in capsys.readouterr().out
    assert pruning_script.checkpoint_fingerprint(checkpoint) == recorded

    state = torch.load(checkpoint, weights_only=True)
    first = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][first] = state["state_dict"][first] + 1.0
    torch.save(state, checkpoint)
    n_before = len(optuna.load_study(study_name=name, storage=storage).trials)
    with pytest.raises(SystemExit, match="another checkpoint") as excinfo:
        pruning_script.main(_argv(tmp_path, 5, "--skip-final"))
    assert name in str(excinfo.value) and recorded in str(excinfo.value)
    assert len(optuna.load_study(study_name=name, storage=storage).trials) == n_before


@pytest.mark.parametrize(
    ("text", "seeds"),
    [
        ("3", [0, 1, 2]),
        ("5-7", [5, 6, 7]),
        ("0,3,7", [0, 3, 7]),
        ("08", list(range(8))),
        ("4,", [4]),
    ],
)
def test_seeds_are_a_count_a_span_or_a_list(text: str, seeds: list[int]) -> None:
    from benchmarks._common import parse_seeds

    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "give N >= 1"),
        ("4-2", "give N >= 1"),
        ("x", "give N >= 1"),
        ("1,,2", "give N"),
        ("1,2,1", r"names seed\(s\) \[1\] twice"),
    ],
)
def test_bad_seeds_are_refused_before_any_work(
    pruning_script: ModuleType, tmp_path: Path, text: str, message: str
) -> None:
    argv = _argv(tmp_path, 1)
    argv[argv.index("--seeds") + 1] = text
    with pytest.raises(SystemExit, match=message):
        pruning_script.main(argv)
    assert not any(tmp_path.iterdir())  # no storage, checkpoint or report written


def test_paired_difference_by_seed() -> None:
    from benchmarks._common import paired_difference

    a = {0: np.array([1.0, 3.0]), 1: np.array([2.0, 2.0]), 2: np.array([0.0, 5.0])}
    b = {0: np.array([1.0, 1.0]), 1: np.array([1.0, 3.0]), 3: np.array([9.0, 9.0])}
    mean, low, high, ahead, n = paired_difference(a, b, 2)  # type: ignore[misc]
    assert (mean, ahead, n) == (0.5, 1, 2)  # seeds 0 and 1 only: +2 and -1
    assert low == pytest.approx(-1.0) and high == pytest.approx(2.0)
    assert paired_difference(a, {5: np.array([0.0])}, 1) is None


def test_journal_file_storage_keeps_studies(pruning_script: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "results" / "studies.log"
    storage = pruning_script.get_storage(str(path))
    assert isinstance(storage, optuna.storages.JournalStorage)
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=2)
    again = optuna.load_study(study_name="s", storage=pruning_script.get_storage(str(path)))
    assert len(again.trials) == 2 and path.stat().st_size > 0


def test_bocr_studies_with_another_distance_get_their_own_names(
    pruning_script: ModuleType,
) -> None:
    import argparse

    args = argparse.Namespace(
        autocast=False, masked_eval=False, flops_ratio=0.5, val_size=500, distance=None
    )
    default = pruning_script.study_name(args, "resnet56", "bocr", 3)
    assert default == "pruning-resnet56-flops0.5-val500-bocr-seed3"
    args.distance = "js"
    assert pruning_script.study_name(args, "resnet56", "bocr", 3) == (
        "pruning-resnet56-flops0.5-val500-bocr-js-seed3"
    )
    assert pruning_script.study_name(args, "resnet56", "gp", 3).endswith("-gp-seed3")
    # The wall rule (the benchmark's default) keeps the names of every earlier study.
    args.budget_rule = "wall"
    assert pruning_script.study_name(args, "resnet56", "gp", 3) == (
        "pruning-resnet56-flops0.5-val500-gp-seed3"
    )
    args.budget_rule = "scale"
    assert pruning_script.study_name(args, "resnet56", "gp", 3) == (
        "pruning-resnet56-flops0.5-val500-scale-gp-seed3"
    )


def test_seed_tests_of_studies_with_other_settings_stay_out_of_the_table() -> None:
    import argparse

    from benchmarks._pruning_report import _seed_test_lines

    args = argparse.Namespace(
        autocast=False, masked_eval=False, flops_ratio=0.5, val_size=500, distance=None
    )
    prefix = "pruning-resnet56-flops0.5-val500"
    final = {
        "seeds": {
            f"{prefix}-bocr-seed0": {"test_top1": 88.0},
            f"{prefix}-bocr-js-seed0": {"test_top1": 10.0},  # another --distance
            f"{prefix}-gp-seed0": {"test_top1": 87.0},
            f"{prefix}-gp-seed1": {"test_top1": 20.0},  # a seed not asked for
        }
    }
    table = "\n".join(_seed_test_lines(final, args, "resnet56", ["bocr", "gp"], [0]))
    assert "| BOCR defaults | 1 | 88.00 [88.00, 88.00] | - |" in table
    assert "| GPSampler | 1 | 87.00 [87.00, 87.00] | +1.00 [+1.00, +1.00] (1/1) |" in table
    args.distance = "js"
    table = "\n".join(_seed_test_lines(final, args, "resnet56", ["bocr"], [0]))
    assert "| BOCR defaults, distance 'js' | 1 | 10.00 [10.00, 10.00] | - |" in table
    assert "and BOCR defaults, distance 'js' minus the method" in table
    # Another BOCR variant as the reference: it is compared with the defaults too.
    args.distance, args.reference = None, "bocr-trust"
    final["seeds"][f"{prefix}-bocr-trust-seed0"] = {"test_top1": 88.5}
    table = "\n".join(_seed_test_lines(final, args, "resnet56", ["bocr-trust", "bocr"], [0]))
    assert "| BOCR, trust region | 1 | 88.50 [88.50, 88.50] | - |" in table
    assert "| BOCR defaults | 1 | 88.00 [88.00, 88.00] | +0.50 [+0.50, +0.50] (1/1) |" in table


def test_a_study_is_never_resumed_with_another_budgets_schedule(
    pruning_script: ModuleType, tmp_path: Path
) -> None:
    import argparse

    from benchmarks import _methods
    from benchmarks._pruning_setup import check_schedules
    from benchmarks._pruning_setup import existing_studies
    from benchmarks._pruning_setup import SAMPLER_SETTINGS_KEY

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    args = argparse.Namespace(
        autocast=False,
        masked_eval=False,
        flops_ratio=0.5,
        val_size=200,
        distance=None,
        budget_rule="scale",
        storage=storage,
        n_trials=100,
    )
    space = {f"layer{i}": optuna.distributions.FloatDistribution(0.1, 1.0) for i in range(9)}
    features = {n: [float(i)] for i, n in enumerate(space)}
    for method in ("bocr-gradual", "bocr-paper"):  # recorded as run_one records them
        _, settings = _methods.make_sampler(
            method, seed=0, search_space=space, features=features, n_trials=100, bridge_clusters=6
        )
        study = optuna.create_study(
            storage=storage, study_name=pruning_script.study_name(args, "resnet20", method, 0)
        )
        study.set_user_attr(SAMPLER_SETTINGS_KEY, json.loads(json.dumps(settings, default=str)))
        study.optimize(lambda t: sum(t.suggest_float(n, 0.1, 1.0) for n in space), n_trials=2)
    jobs = [(args, "resnet20", m, 0) for m in ("bocr-gradual", "bocr-paper", "gp")]
    check_schedules(args, jobs, existing_studies(args))  # the same budget resumes
    args.n_trials = 200
    name = pruning_script.study_name(args, "resnet20", "bocr-gradual", 0)
    with pytest.raises(SystemExit, match="another trial budget") as excinfo:
        check_schedules(args, jobs, existing_studies(args))
    message = str(excinfo.value)
    assert name in message and "[50, 75]" in message and "[100, 150]" in message
    assert "bocr-paper-seed0" not in message  # the published schedule extends at any budget
    study = optuna.load_study(study_name=name, storage=storage)
    assert len(study.trials) == 2  # nothing changed
