"""Opening the study storage: checked up front, created last, safe for many workers.

Three kinds of storage are understood: an SQLAlchemy URL (``sqlite:///file.db``,
``postgresql://user:pass@host/db``, ``mysql+pymysql://...``), and a plain file path, which is
an Optuna ``JournalStorage`` log file (as in Optuna's own command line).

- :func:`check_storage` refuses, before any work, what cannot be opened: a URL SQLAlchemy
  does not know, a driver that is not installed (naming the extra that brings it), a SQLite
  or journal file in a directory that does not exist or cannot be written.
- :func:`open_storage` opens it. An existing SQLite or journal file (or a server) can be
  opened early, to check the study in it; a new file is only created by
  :func:`open_storage` with ``create=True``, after every check passed, so that a refused
  command leaves no file behind.
- Workers started at the same moment on a new database all try to create Optuna's tables;
  :func:`open_storage` creates them under :func:`storage_lock` (a PostgreSQL or MySQL
  advisory lock, or a file lock on the SQLite file's directory) and retries a few times.
- RDB storages get Optuna's heartbeat: a worker that dies leaves a trial whose heartbeat
  stops, which the next worker to look fails and re-queues
  (:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`).
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
import threading
import time
from typing import Any
import warnings

import optuna

from optuna_bocr.cli._common import CLIError
from optuna_bocr.cli._common import first_line

DRIVER_EXTRAS = {"psycopg": "postgresql", "pymysql": "mysql"}
"""Python DB-API module -> the optuna-bocr extra that installs it."""

MAX_RETRY = 3
"""How often a trial whose worker died is re-queued (then it stays FAIL)."""

_SCHEMA_ATTEMPTS = 5


def is_journal(url: str) -> bool:
    """Whether ``url`` names a JournalStorage log file (a plain path, no ``scheme://``)."""
    return "://" not in url


def _sqlalchemy_url(url: str) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except ArgumentError as e:
        raise CLIError(
            f"cannot open storage {url!r}: not a storage URL (e.g. sqlite:///optuna-bocr.db, "
            "postgresql://user:pass@host/db, or a journal file path)"
        ) from e


def local_file(url: str) -> Path | None:
    """The file of a SQLite URL or journal path; ``None`` for a server or in-memory SQLite."""
    if is_journal(url):
        return Path(url).expanduser()
    parsed = _sqlalchemy_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


def exists(url: str) -> bool:
    """Whether opening ``url`` writes nothing new: its file exists, or it is a server."""
    path = local_file(url)
    return path is None or path.is_file()


def check_storage(url: str) -> None:
    """Refuse a storage that cannot be opened, without creating or connecting to anything.

    Raises:
        CLIError: Unknown URL scheme, a missing driver (with the ``pip install`` line that
            brings it), or the directory of a new file missing or read-only.
    """
    if not is_journal(url):
        parsed = _sqlalchemy_url(url)
        try:
            dialect = parsed.get_dialect()
        except Exception as e:  # noqa: BLE001 - NoSuchModuleError and friends
            raise CLIError(f"cannot open storage {url!r}: {first_line(e)}") from e
        try:
            dialect.import_dbapi()
        except ImportError as e:
            module = getattr(dialect, "driver", None) or getattr(e, "name", None) or "driver"
            extra = DRIVER_EXTRAS.get(module)
            how = f"pip install 'optuna-bocr[{extra}]'" if extra else f"pip install {module}"
            raise CLIError(
                f"storage {url!r} needs the {module} database driver, which is not "
                f"installed: {how}"
            ) from e
    path = local_file(url)
    if path is None:
        return
    if path.is_dir():
        raise CLIError(f"cannot open storage {url!r}: {path} is a directory")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise CLIError(f"cannot open storage {url!r}: {path} is not readable and writable")
        return
    parent = path.resolve().parent
    if not parent.is_dir():
        raise CLIError(f"cannot open storage {url!r}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise CLIError(f"cannot open storage {url!r}: directory {parent} is not writable")


def _lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class _FileLock:
    """``flock`` on a directory: one holder at a time among the processes of this machine."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._fd: int | None = None

    def acquire(self) -> None:
        self._fd = os.open(self._directory, os.O_RDONLY)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class _AdvisoryLock:
    """A PostgreSQL or MySQL advisory lock: one holder at a time among all clients."""

    def __init__(self, url: str, name: str) -> None:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        self._engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        self._backend = self._engine.dialect.name
        self._key = _lock_key(name)
        self._name = f"optuna_bocr_{self._key & 0xFFFFFFFF:x}"
        self._conn: Any = None

    def acquire(self) -> None:
        from sqlalchemy import text

        self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        if self._backend == "postgresql":
            self._conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
        else:
            self._conn.execute(text("SELECT GET_LOCK(:n, -1)"), {"n": self._name})

    def release(self) -> None:
        from sqlalchemy import text

        if self._conn is None:
            return
        try:
            if self._backend == "postgresql":
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            else:
                self._conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self._name})
        finally:
            self._conn.close()
            self._conn = None


class StorageLock:
    """A lock shared by every worker of one storage (and ``name``), threads included.

    PostgreSQL and MySQL: an advisory lock on the server, so workers on several machines
    take turns. SQLite and journal files: ``flock`` on the file's directory (such files are
    shared by the processes of one machine only). Other databases: this process only.

    Args:
        url: The storage URL or journal path.
        name: What is locked (a study name, or the schema).
    """

    def __init__(self, url: str, name: str) -> None:
        self._threads = threading.Lock()
        self._inner: _FileLock | _AdvisoryLock | None = None
        path = local_file(url)
        if path is not None:
            self._inner = _FileLock(path.resolve().parent)
        elif _sqlalchemy_url(url).get_backend_name() in ("postgresql", "mysql"):
            self._inner = _AdvisoryLock(url, name)

    def __enter__(self) -> StorageLock:
        self._threads.acquire()
        try:
            if self._inner is not None:
                self._inner.acquire()
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._inner is not None:
                self._inner.release()
        finally:
            self._threads.release()


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def open_storage(
    url: str, *, heartbeat: int | None = None, create: bool = True
) -> optuna.storages.BaseStorage | None:
    """Open the storage at ``url``.

    Args:
        url: SQLAlchemy URL or journal file path (checked with :func:`check_storage` first).
        heartbeat: Seconds between heartbeats of a running trial (RDB storages; ``None`` or
            0: none). A trial whose heartbeat is older than twice this is failed by the next
            worker that looks, and re-queued up to :data:`MAX_RETRY` times.
        create: Whether a new SQLite or journal file may be created; if not and the file
            does not exist, return ``None``.

    Raises:
        CLIError: The storage cannot be opened (server unreachable, not an Optuna database).
    """
    if not create and not exists(url):
        return None
    check_storage(url)
    if is_journal(url):
        from optuna.storages.journal import JournalFileBackend

        try:
            return optuna.storages.JournalStorage(JournalFileBackend(str(Path(url).expanduser())))
        except Exception as e:  # noqa: BLE001 - any failure to open is bad input for the user
            raise CLIError(f"cannot open storage {url!r}: {first_line(e)}") from e
    kwargs: dict[str, Any] = {}
    if heartbeat:
        with _quiet_experimental():
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        kwargs = dict(
            heartbeat_interval=int(heartbeat),
            grace_period=2 * int(heartbeat),
            heartbeat_stale_trial_callback=retry,
        )
    import sqlalchemy.exc

    error: Exception | None = None
    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            with StorageLock(url, "optuna-schema"), _quiet_experimental():
                return optuna.storages.RDBStorage(url, **kwargs)
        except sqlalchemy.exc.SQLAlchemyError as e:
            # Another worker, without this lock (an older version, or another tool), may be
            # creating the tables at the same moment: wait and try again.
            error = e
            time.sleep(0.2 * (attempt + 1))
        except Exception as e:  # noqa: BLE001 - any failure to open is bad input for the user
            raise CLIError(f"cannot open storage {url!r}: {first_line(e)}") from e
    assert error is not None
    raise CLIError(f"cannot open storage {url!r}: {first_line(error)}") from error


def heartbeat_of(storage: optuna.storages.BaseStorage) -> int | None:
    """The heartbeat interval of ``storage`` in seconds, or ``None`` without heartbeat."""
    getter = getattr(storage, "get_heartbeat_interval", None)
    return getter() if callable(getter) else None
