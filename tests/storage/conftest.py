"""Storages for the storage tests: SQLite, a JournalStorage file, and a real PostgreSQL server.

PostgreSQL: the server of ``$OPTUNA_BOCR_TEST_POSTGRES_URL`` (``.ci/run`` starts one), else a
server started here for the session; the tests skip, saying why, only when none can start.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
import os
from pathlib import Path

import pytest

from tests.storage._postgres import ENV_URL
from tests.storage._postgres import new_database
from tests.storage._postgres import start_server

KINDS = ("sqlite", "journal", "postgresql")


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """The admin URL of a running PostgreSQL server (skip, with the reason, if none)."""
    url = os.environ.get(ENV_URL)
    if url:
        yield url
        return
    try:
        url, stop = start_server()
    except (RuntimeError, OSError) as e:
        pytest.skip(f"no PostgreSQL server: {e} (or set {ENV_URL})")
    try:
        yield url
    finally:
        stop()


@pytest.fixture()
def new_storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """``make(kind)``: the URL of a new, empty storage of ``kind`` (nothing created yet for
    files; an empty database for PostgreSQL)."""

    def make(kind: str) -> str:
        if kind == "sqlite":
            return f"sqlite:///{tmp_path / 'study.db'}"
        if kind == "journal":
            return str(tmp_path / "study.log")
        assert kind == "postgresql"
        return new_database(request.getfixturevalue("postgres_admin_url"))

    return make
