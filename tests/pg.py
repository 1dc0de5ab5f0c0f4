"""A throwaway PostgreSQL server for the storage tests: initdb + pg_ctl in a temporary folder.

The server runs as an unprivileged user (PostgreSQL refuses root), listens on a free loopback port
with trust authentication, and is stopped at the end of the test session. Each test gets a fresh
database of its own (``CREATE DATABASE`` is cheap), so nothing leaks between tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("EMOLENS_PG_BIN", "/usr/lib/postgresql/15/bin"))


class Unavailable(Exception):
    """Why no PostgreSQL server can be started here (the tests skip with this reason)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    folder: Path
    port: int
    user: str | None

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run([str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), *args], self.user, check=check)


def _run(cmd: list[str], user: str | None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, user=user, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise Unavailable(f"{Path(cmd[0]).name} failed: {(proc.stderr or proc.stdout).strip()[-400:]}")
    return proc


def start() -> PostgresServer:
    """Start a server, or raise :class:`Unavailable` saying why not."""
    if not (PG_BIN / "initdb").exists():
        raise Unavailable(f"no PostgreSQL server binaries in {PG_BIN} (set EMOLENS_PG_BIN to their folder)")
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise Unavailable("psycopg is not installed (pip install -e '.[postgres]')") from exc
    # initdb refuses to run as root: as root, run the server as `nobody` in a folder it owns.
    user = "nobody" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="emolens-pg-"))
    if user:
        shutil.chown(folder, user)
    data = folder / "data"
    _run([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"], user)
    port = _free_port()
    with open(data / "postgresql.conf", "a") as conf:
        # Loopback only, no Unix socket (its default folder may not be writable), and no fsync:
        # the tests kill clients, never the server, so durability of the server's disk is not tested.
        conf.write(
            f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
        )
    server = PostgresServer(folder, port, user)
    try:
        server._pg_ctl("start", "-w", "-t", "60", "-l", str(folder / "server.log"))
    except Unavailable:
        log = (folder / "server.log").read_text(errors="replace")[-400:] if (folder / "server.log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        raise Unavailable(f"the PostgreSQL server did not start: {log}") from None
    return server
