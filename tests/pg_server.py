"""A throwaway local PostgreSQL server for tests (Debian's ``postgresql`` package).

:func:`postgres_server` runs ``initdb`` into a fresh temporary directory, starts the server
with ``pg_ctl`` on a free 127.0.0.1 port (unix socket in the same directory, fsync off),
creates a database, yields its SQLAlchemy URL and stops the server (``-m immediate``) and
removes the directory on exit. PostgreSQL refuses to run as root, so under root the
server runs as the ``postgres`` system user (created by the Debian package) through
``runuser``. Binaries are looked up in ``$MPQBENCH_PG_BINDIR``, then ``PATH``, then
``/usr/lib/postgresql/<version>/bin`` (where Debian installs them, off ``PATH``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be started here (the message says why)."""


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Raises:
        PostgresUnavailable: none found.
    """
    candidates = []
    if os.environ.get("MPQBENCH_PG_BINDIR"):
        candidates.append(Path(os.environ["MPQBENCH_PG_BINDIR"]))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted((Path(p) for p in versions), key=lambda p: _version(p), reverse=True)
    for path in candidates:
        if all((path / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return path
    raise PostgresUnavailable(
        "no PostgreSQL binaries (initdb, pg_ctl, postgres) on PATH or in "
        "/usr/lib/postgresql/*/bin; install Debian's package: apt-get install postgresql"
    )


def _version(path: Path) -> float:
    try:
        return float(path.parent.name)
    except ValueError:
        return 0.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "running as root and there is no 'postgres' user to run the server as "
            "(PostgreSQL refuses to run as root)"
        ) from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailable("running as root and no runuser to drop to 'postgres'")
    return [runuser, "-u", "postgres", "--", *argv]


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(_as_server_user(argv), capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise PostgresUnavailable(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")


@contextlib.contextmanager
def postgres_server(database: str = "mpqbench") -> Iterator[str]:
    """Start a throwaway server; yield ``postgresql+psycopg2://postgres@127.0.0.1:PORT/db``.

    Raises:
        PostgresUnavailable: no binaries, no driver, or the server did not start.
    """
    try:
        import psycopg2
    except ImportError:
        raise PostgresUnavailable(
            "the psycopg2 driver is not installed (pip install psycopg2-binary)"
        ) from None
    bindir = find_bindir()
    root = Path(tempfile.mkdtemp(prefix="mpqbench-pg-"))  # short: unix socket paths are short
    try:
        if os.geteuid() == 0:
            shutil.chown(root, user="postgres")
        data = root / "data"
        _run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
              "-E", "UTF8", "--no-sync"], "initdb")
        port = None
        for _ in range(3):  # another process may take the free port before the server does
            port = _free_port()
            options = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off")
            try:
                _run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
                      "-w", "-t", "60", "-o", options, "start"], "pg_ctl start")
                break
            except PostgresUnavailable:
                port = None
        if port is None:
            log = (root / "server.log").read_text(errors="replace")[-500:]
            raise PostgresUnavailable(f"the server did not start; log tail: {log}")
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres",
                                    dbname="postgres")
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{database}"')
            conn.close()
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{database}"
        finally:
            subprocess.run(
                _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                 "-w", "stop"]),
                capture_output=True, timeout=60, check=False,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
