"""Opening storages as the command line does: nothing created early, heartbeat where possible."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from optuna_bocr.cli import CLIError
from optuna_bocr.cli import open_storage
from optuna_bocr.cli._storage import check_storage
from optuna_bocr.cli._storage import heartbeat_of
from optuna_bocr.cli._storage import local_file


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_new_file_is_created_only_when_asked(
    kind: str, new_storage_url: Callable[[str], str]
) -> None:
    url = new_storage_url(kind)
    path = local_file(url)
    assert path is not None
    check_storage(url)
    assert open_storage(url, heartbeat=5, create=False) is None
    assert not path.exists()
    storage = open_storage(url, heartbeat=5)
    assert path.is_file()
    optuna.create_study(storage=storage, study_name="s")
    again = open_storage(url, create=False)
    assert again is not None and optuna.get_all_study_names(again) == ["s"]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_rdb_storages_get_the_heartbeat(kind: str, new_storage_url: Callable[[str], str]) -> None:
    url = new_storage_url(kind)
    assert heartbeat_of(open_storage(url, heartbeat=7)) == 7  # type: ignore[arg-type]
    assert heartbeat_of(open_storage(url)) is None  # type: ignore[arg-type]


def test_journal_storage_has_no_heartbeat(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "j.log"), heartbeat=7)
    assert isinstance(storage, optuna.storages.JournalStorage)
    assert heartbeat_of(storage) is None


def test_unreachable_server_is_one_clear_error(tmp_path: Path) -> None:
    url = f"postgresql://nobody@/db?host={tmp_path}"  # No server on this socket folder.
    check_storage(url)  # The driver is there; connecting is what fails.
    with pytest.raises(CLIError, match="cannot open storage"):
        open_storage(url)


def test_the_command_line_opens_postgresql(
    new_storage_url: Callable[[str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    from optuna_bocr.cli import main

    url = new_storage_url("postgresql")  # A plain postgresql:// URL: psycopg 3.
    storage = open_storage(url)
    optuna.create_study(storage=storage, study_name="other")
    assert main(["export", "--storage", url, "--study-name", "missing"]) == 2
    assert "no study 'missing'" in capsys.readouterr().err
