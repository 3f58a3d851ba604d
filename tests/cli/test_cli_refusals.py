"""Bad input to ``optuna-bocr`` is refused up front: one line, exit status 2, nothing written.

Refused here before any data is read: output paths that cannot be written, options whose
optional package is missing (named with the extra that installs it), and a new SQLite
storage is never created by a refused command.
"""

from __future__ import annotations

from pathlib import Path
import sys

import pytest

from optuna_bocr.cli import main
from tests.cli.test_cli import HAVE_PIPELINE

PREFIX = {"prune": "optuna-bocr prune: error:", "export": "optuna-bocr export: error:"}


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], match: str) -> str:
    """Run ``argv``; it must fail with exit status 2 and one stderr line containing ``match``."""
    code = main(argv)
    assert code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(PREFIX[argv[0]]), lines[0]
    assert match in lines[0], lines[0]
    assert "Preparing" not in captured.out and "Training" not in captured.out  # No work.
    return lines[0]


def prune(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "prune", "--quiet", "--storage", f"sqlite:///{tmp_path / 'new.db'}",
        "--cache-dir", str(tmp_path / "cache"), *extra,
    ]  # fmt: skip


def test_prune_export_to_a_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    refused(capsys, prune(tmp_path, "--export", str(folder)), "is a directory")
    refused(capsys, prune(tmp_path, "--export", "/proc/optuna-bocr/model.pt"), "cannot write")
    refused(capsys, prune(tmp_path, "--export", "/proc/model.pt"), "cannot write")
    assert not (tmp_path / "new.db").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # Not even the cache folder.


def test_export_output_and_plot_paths_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    base = ["export", "--storage", storage]
    refused(capsys, [*base, "--output", str(folder)], "is a directory")
    refused(capsys, [*base, "--output", "/proc/model.pt"], "cannot write")
    refused(capsys, [*base, "--plot", str(folder)], "is a directory")
    (tmp_path / "file").write_text("")
    refused(capsys, [*base, "--artifact-store", str(tmp_path / "file")], "not a directory")
    assert not (tmp_path / "study.db").exists()


@pytest.mark.parametrize(
    ("module", "argv", "match"),
    [
        ("matplotlib", ["export", "--plot", "{tmp}/r.png"], "pip install 'optuna-bocr[plot]'"),
        ("cmaes", ["prune", "--sampler", "cmaes"], "pip install 'optuna-bocr[cmaes]'"),
        (
            "psycopg",
            ["prune", "--storage", "postgresql://user@localhost/db"],
            "pip install 'optuna-bocr[postgresql]'",
        ),
        (
            "psycopg",
            ["export", "--storage", "postgresql://user@localhost/db"],
            "pip install 'optuna-bocr[postgresql]'",
        ),
    ],
)
def test_missing_optional_package_names_its_extra(
    module: str,
    argv: list[str],
    match: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The package is made unimportable, as after a plain `pip install optuna-bocr`.
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--storage" not in argv:
        argv += ["--storage", f"sqlite:///{tmp_path / 'new.db'}"]
    if argv[0] == "prune":
        argv += ["--cache-dir", str(tmp_path / "cache")]
    line = refused(capsys, argv, match)
    assert module in line
    assert list(tmp_path.iterdir()) == []  # No storage file, no model, no plot.


def test_unknown_storage_and_missing_folder_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refused(capsys, prune(tmp_path)[:3] + ["nosuchdb://u@h/db"], "cannot open storage")
    refused(
        capsys,
        prune(tmp_path)[:3] + [f"sqlite:///{tmp_path / 'missing' / 'x.db'}"],
        "does not exist",
    )
    refused(capsys, prune(tmp_path)[:3] + [str(tmp_path / "missing" / "j.log")], "does not exist")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not HAVE_PIPELINE, reason="needs the pruning objective modules")
def test_refusals_after_the_data_leave_no_new_storage_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused only once the data (or checkpoint) is looked at: still no storage file.
    refused(capsys, prune(tmp_path, "--data-dir", str(tmp_path / "nowhere")), "does not exist")
    refused(capsys, prune(tmp_path, "--checkpoint", str(tmp_path / "no.pt")), "not found")
    journal = ["--storage", str(tmp_path / "study.log")]
    refused(capsys, prune(tmp_path, "--data-dir", str(tmp_path / "nowhere"), *journal), "exist")
    assert not (tmp_path / "new.db").exists()
    assert not (tmp_path / "study.log").exists()
