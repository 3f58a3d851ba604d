"""A throw-away local PostgreSQL server for the storage tests.

CI (``.ci/run``) starts one and exports its URL as ``OPTUNA_BOCR_TEST_POSTGRES_URL``; without
it, :func:`start_server` starts one itself from the server binaries (Debian's ``postgresql``
package: ``/usr/lib/postgresql/<version>/bin``) in a temporary directory, listening on a
Unix socket only. As root it runs the server as the ``postgres`` (or ``nobody``) user, since
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

from collections.abc import Callable
import glob
import os
from pathlib import Path
import pwd
import shutil
import subprocess
import tempfile
import uuid

ENV_URL = "OPTUNA_BOCR_TEST_POSTGRES_URL"


def server_bin() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl``, or ``None``."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    return Path(versions[-1]).parent if versions else None


def _as_user() -> tuple[list[str], str | None]:
    """The command prefix that runs as a non-root user, and that user."""
    if os.geteuid() != 0:
        return [], None
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--"], user
    raise RuntimeError("running as root and no postgres or nobody user to run PostgreSQL as")


def start_server() -> tuple[str, Callable[[], None]]:
    """Start a server; return its admin URL and a function that stops it and removes it.

    Raises:
        RuntimeError: No server binaries, or the server did not start (the reason in it).
    """
    bindir = server_bin()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server binaries (apt-get install postgresql)")
    prefix, user = _as_user()
    base = Path(tempfile.mkdtemp(prefix="optuna-bocr-pg-"))
    os.chmod(base, 0o755)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    data, log = base / "data", base / "server.log"

    def run(*cmd: str) -> None:
        proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            if log.is_file():
                tail = log.read_text().strip().splitlines()[-1:] or tail
            raise RuntimeError(f"{Path(cmd[0]).name} failed: {tail[0]}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-N")
        options = f"-k {base} -c listen_addresses='' -c fsync=off -c max_connections=200"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise

    def stop() -> None:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(base, ignore_errors=True)

    return f"postgresql://postgres@/postgres?host={base}", stop


def new_database(admin_url: str) -> str:
    """Create an empty database on the server of ``admin_url``; return its URL."""
    import sqlalchemy

    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    finally:
        engine.dispose()
    url = sqlalchemy.engine.make_url(admin_url).set(database=name)
    return url.render_as_string(hide_password=False)
