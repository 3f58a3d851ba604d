"""The GPU-machine scripts: syntax, and bad input refused with one clear line before any work."""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import subprocess
import tarfile

import optuna
import pytest

from optuna_bocr.data import DEBIAN_FASHION_MNIST

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "benchmarks" / "gpu"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("script", ["prepare.sh", "run.sh", "grid.sh"])
def test_syntax_and_help(script: str) -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPTS / script)], check=False).returncode == 0
    done = _run(script, "--help")
    assert done.returncode == 0
    assert "benchmarks/gpu/" in done.stdout


def test_prepare_refuses_bad_python_version(tmp_path: Path) -> None:
    done = _run("prepare.sh", "--dest", str(tmp_path / "carry"), "--python-version", "312")
    assert done.returncode == 2
    assert "--python-version wants X.Y" in done.stderr
    assert not (tmp_path / "carry").exists()


def test_scripts_refuse_outside_the_repository(tmp_path: Path) -> None:
    for script, args in (("prepare.sh", ()), ("run.sh", ()), ("grid.sh", ("resnet20/random",))):
        done = _run(script, *args, cwd=tmp_path)
        assert done.returncode == 2
        assert "repository root" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_run_refuses_a_missing_carry(tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = _run("run.sh", str(results), "--carry", str(tmp_path / "absent"))
    assert done.returncode == 2
    assert "run benchmarks/gpu/prepare.sh first" in done.stderr
    assert not results.exists()


def test_grid_refuses_bad_waves_and_a_missing_carry(tmp_path: Path) -> None:
    env_out = tmp_path / "out"
    for args, message in (
        ((), "name at least one wave"),
        (("resnet20",), "a wave is TASKS/METHODS"),
        (("--budget", "9m", "resnet20/random"), "--budget wants whole seconds"),
        (("--carry", str(tmp_path / "absent"), "resnet20/random"), "prepare.sh first"),
        (("--resume", str(tmp_path / "absent.log.gz"), "resnet20/random"), "no such file"),
        (("--checkpoint", "e15", "resnet56/random"), "--checkpoint is e6 or e15-autocast"),
        (("--checkpoint", "e15-autocast", "resnet56,resnet20/gp"), "is ResNet-56's only"),
        (("--seeds", "5-9x", "resnet20/random"), "--seeds wants N"),
        (("--seeds", "9-5", "resnet20/random"), "A-B with A <= B"),
        (("--seeds", "0", "resnet20/random"), "--seeds wants N"),
        (("--seeds", "4,1,04", "resnet20/random"), "names seed(s) 4 twice"),
        (("--seeds", "4,4,", "resnet20/random"), "names seed(s) 4 twice"),
        # "4," (seed 4 alone) is a good list: the run goes on to the missing carry.
        (("--seeds", "4,", "--carry", str(tmp_path / "absent"), "resnet20/random"), "prepare.sh"),
    ):
        done = subprocess.run(
            ["bash", str(SCRIPTS / "grid.sh"), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "OUT": str(env_out)},
        )
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not env_out.exists()


@pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist",
)
def test_grid_dry_run_packs_a_journal_that_resumes(tmp_path: Path) -> None:
    """The CPU dry run of the GPU grid: a real 3-trial study on the committed ResNet-20, its
    journal packed; run again from that journal with seeds 0-1, the finished study is skipped
    and seed 1's study runs."""
    carry = tmp_path / "carry"
    (carry / "data").mkdir(parents=True)
    for f in DEBIAN_FASHION_MNIST.glob("*.gz"):
        (carry / "data" / f.name).symlink_to(f)

    def grid(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPTS / "grid.sh"), "--cpu-dry-run", "--carry", str(carry), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env={**os.environ, "OUT": str(out), "OMP_NUM_THREADS": "1"},
        )

    first = grid(tmp_path / "first", "resnet20/random")
    assert first.returncode == 0, first.stdout + first.stderr
    with tarfile.open(tmp_path / "first" / "val5000-cuda.tar.gz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    journal = tmp_path / "unpacked" / "pruning-val5000-cuda" / "studies.log"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    (study,) = optuna.get_all_study_summaries(storage)
    assert study.study_name.startswith("pruning-resnet20-flops0.5-val500-scale-random-seed0")
    trials = optuna.load_study(study_name=study.study_name, storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert all(0.0 < t.value <= 100.0 for t in trials)

    second = grid(
        tmp_path / "second", "--resume", str(journal), "--seeds", "0-1", "resnet20/random"
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert (
        "[skip] pruning-resnet20-flops0.5-val500-scale-random-seed0: 3 complete trials"
        in (tmp_path / "second" / "wave1.log").read_text()
    )
    assert "wave 1 (resnet20/random): 2 studies at once" in second.stdout
    with tarfile.open(tmp_path / "second" / "val5000-cuda.tar.gz") as tar:
        tar.extractall(tmp_path / "again", filter="data")
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(
            str(tmp_path / "again" / "pruning-val5000-cuda" / "studies.log")
        )
    )
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert [n[-6:] for n in names] == ["-seed0", "-seed1"]
    seed1 = optuna.load_study(study_name=names[1], storage=storage)
    assert [t.state for t in seed1.trials] == [optuna.trial.TrialState.COMPLETE] * 3
