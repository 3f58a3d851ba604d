"""The GPU-machine scripts: syntax, and bad input refused with one clear line before any work."""

from __future__ import annotations

from pathlib import Path
import shutil
import subprocess

import pytest

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


@pytest.mark.parametrize("script", ["prepare.sh", "run.sh"])
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
    for script in ("prepare.sh", "run.sh"):
        done = _run(script, cwd=tmp_path)
        assert done.returncode == 2
        assert "repository root" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_run_refuses_a_missing_carry(tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = _run("run.sh", str(results), "--carry", str(tmp_path / "absent"))
    assert done.returncode == 2
    assert "run benchmarks/gpu/prepare.sh first" in done.stderr
    assert not results.exists()
