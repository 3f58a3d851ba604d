"""The selection benchmark: validation gains against test gains, and the GP's mean pick."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from benchmarks import pruning
from benchmarks import selection
from benchmarks._pruning_setup import get_objective
from benchmarks._pruning_setup import get_storage
from optuna_bocr.data import DataSplits
from optuna_bocr.data import load_splits
from optuna_bocr.training import evaluate


def _record(method: str, seed: int, trial: int, val: float, test: float) -> dict[str, object]:
    return {"method": method, "seed": seed, "trial": trial, "val_top1": val, "test_top1": test}


def _write_report(folder: Path, records: dict[str, dict[str, object]]) -> str:
    folder.mkdir()
    (folder / "final_resnet20.json").write_text(json.dumps({"seeds": records}))
    return str(folder)


def test_carry_pairs_each_study_with_itself_at_the_two_budgets(tmp_path: Path) -> None:
    early = {
        "s-a-0": _record("a", 0, 10, 90.0, 89.0),
        "s-a-1": _record("a", 1, 12, 90.5, 89.5),
        "s-b-0": _record("b", 0, 7, 91.0, 90.0),
        "s-c-0": _record("c", 0, 3, 88.0, 87.0),  # no later record: left out
    }
    late = {
        "s-a-0": _record("a", 0, 150, 91.0, 89.0),  # a new best that did not carry
        "s-a-1": _record("a", 1, 180, 91.5, 89.5),
        "s-b-0": _record("b", 0, 7, 91.0, 90.0),  # the same trial
    }
    out = tmp_path / "selection.json"
    selection.main(
        ["--task", "resnet20", "--storage", "unused.log", "--out", str(out), "--carry",
         _write_report(tmp_path / "t100", early), _write_report(tmp_path / "t200", late)]
    )  # fmt: skip
    result = json.loads(out.read_text())["carry"]
    assert set(result) == {"early", "late", "a", "b"}
    assert result["a"]["seeds"] == 2 and result["a"]["new_best"] == 2
    assert result["a"]["val_gain"]["mean"] == pytest.approx(1.0)
    assert result["a"]["test_gain"]["mean"] == pytest.approx(0.0)
    assert result["a"]["val_gain"]["ahead"] == 2 and result["a"]["test_gain"]["ahead"] == 0
    assert result["b"]["new_best"] == 0 and result["b"]["val_gain"]["mean"] == 0.0
    gaps = json.loads(out.read_text())["optimism"]
    assert gaps["a"] == {"seeds": 2, "val_minus_test": pytest.approx(2.0)}
    assert gaps["b"]["val_minus_test"] == pytest.approx(1.0)


def test_the_posterior_mean_passes_over_a_lucky_trial() -> None:
    # Two neighbourhoods searched closely, scores with 0.4 points of noise: around A the
    # networks score 90.0 on average and one got lucky (91.6, the best observation); around
    # B they score 90.8. The best posterior mean is one of B's.
    rng = np.random.default_rng(0)
    a = np.array([0.4, 0.6]) + rng.uniform(-0.03, 0.03, size=(15, 2))
    b = np.array([0.8, 0.3]) + rng.uniform(-0.03, 0.03, size=(15, 2))
    far = rng.uniform(0.2, 1.0, size=(10, 2))
    ratios = np.concatenate([a, b, far])
    values = np.concatenate(
        [90.0 + rng.normal(0, 0.4, 15), 90.8 + rng.normal(0, 0.4, 15), 85.0 + rng.normal(0, 1, 10)]
    )
    values[3] = 91.6
    index, noise = selection.best_mean_index(ratios, values, lbound=0.2)
    assert int(np.argmax(values)) == 3
    assert 15 <= index < 30
    assert 0.1 < noise < 1.5


def test_nothing_to_do_or_a_missing_report_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--task", "resnet20", "--storage", "unused.log", "--out", str(tmp_path / "o.json")]
    with pytest.raises(SystemExit):
        selection.main(base)
    assert "nothing to do" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        selection.main([*base, "--carry", str(tmp_path), str(tmp_path)])
    assert "no seed tests at" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_rescore_summary_pairs_each_choice_with_the_best_observation() -> None:
    def study(method: str, seed: int, fresh: int, pooled: int, test: dict[int, float]):
        return {"method": method, "seed": seed, "top_k": [],
                "chosen": {"observed": 1, "fresh": fresh, "pooled": pooled},
                "test": {str(n): v for n, v in test.items()}, "seconds": 1.0}  # fmt: skip

    done = {
        "a-0|200": study("a", 0, 2, 1, {1: 90.0, 2: 90.4}),
        "a-1|200": study("a", 1, 1, 3, {1: 89.0, 3: 88.8}),
        "a-2|100": study("a", 2, 2, 2, {1: 80.0, 2: 99.0}),  # another budget: left out
    }
    found = selection.rescore_summary(done, 200)["a"]
    assert found["seeds"] == 2
    assert found["fresh"]["other_trial"] == 1 and found["pooled"]["other_trial"] == 1
    assert found["fresh"]["minus_observed"]["mean"] == pytest.approx(0.2)
    assert found["pooled"]["minus_observed"]["mean"] == pytest.approx(-0.1)
    assert found["observed_test_median"] == pytest.approx(89.5)


def test_rescore_scores_the_best_distinct_networks_on_unseen_images(
    fashion_splits: DataSplits,  # skips when Fashion-MNIST is not installed
    tmp_path: Path,
) -> None:
    if not (pruning.COMMITTED_CHECKPOINTS / "resnet20-fashion-mnist-e6.pt").exists():
        pytest.skip("the committed ResNet-20 checkpoint is not in this tree")
    sizes = ["--val-size", "100", "--n-calibration-images", "100", "--train-epochs", "6"]
    storage = str(tmp_path / "studies.log")
    pruning.main(
        ["--tasks", "resnet20", "--methods", "random", "--seeds", "1", "--n-trials", "8",
         "--budget-rule", "scale", *sizes, "--storage", storage, "--out",
         str(tmp_path / "report"), "--skip-final", "--work-dir", str(tmp_path / "work")]
    )  # fmt: skip
    out = tmp_path / "selection.json"
    argv = ["--task", "resnet20", *sizes, "--storage", storage, "--rescore", "random",
            "--top-k", "3", "--rescore-size", "300", "--test-size", "500", "--seeds", "1",
            "--n-trials", "8",
            "--out", str(out), "--work-dir", str(tmp_path / "work")]  # fmt: skip
    selection.main(argv)

    ((key, found),) = json.loads(out.read_text())["rescore"].items()
    assert key == "pruning-resnet20-flops0.5-val100-scale-random-seed0|8|test500"
    study = optuna.load_study(study_name=key.split("|")[0], storage=get_storage(storage))
    by_number = {t.number: t for t in study.trials}
    top = found["top_k"]
    # Three distinct networks, best search score first; the best observation heads them.
    assert len({r["trial"] for r in top}) == 3
    assert [r["val"] for r in top] == sorted((r["val"] for r in top), reverse=True)
    assert top[0]["val"] == study.best_value and all(
        r["val"] == by_number[r["trial"]].value for r in top
    )
    # The fresh scores are of images 100-299: the observed choice scored there by hand.
    settings = argparse.Namespace(
        flops_ratio=0.5, budget_rule="scale", val_size=100, n_calibration_images=100,
        train_epochs=6, train_max_images=None, autocast=False, masked_eval=False,
        device="cpu", data_root=None, work_dir=str(tmp_path / "work"),
    )  # fmt: skip
    objective = get_objective(settings, "resnet20")
    fresh = load_splits("fashion-mnist", val_size=300, seed=0).val.subset(range(100, 300))
    hand = evaluate(objective.export(by_number[top[0]["trial"]]), fresh, device="cpu")[0]
    assert top[0]["fresh"] == pytest.approx(hand)
    best_fresh = max(r["fresh"] for r in top)
    assert {r["trial"] for r in top if r["fresh"] == best_fresh} >= {found["chosen"]["fresh"]}
    assert found["chosen"]["observed"] == study.best_trial.number
    assert set(found["test"]) == {str(n) for n in found["chosen"].values()}
    assert all(0.0 < v <= 100.0 for v in found["test"].values())
    summary = json.loads(out.read_text())["rescore_summary"]["random"]  # this test size
    assert summary["seeds"] == 1

    # Cached: the same command scores nothing again (a re-run would record other seconds).
    selection.main(argv)
    assert json.loads(out.read_text())["rescore"][key] == found
