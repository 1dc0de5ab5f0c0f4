"""One database for what EmoLens keeps: feedback, people and their embeddings, attendance, API keys.

SQLite in ``$EMOLENS_HOME/emolens.db`` by default; PostgreSQL (or any SQLAlchemy URL) through
``EMOLENS_DATABASE_URL``. The schema is owned by Alembic migrations in ``store/migrations``:
each domain (feedback, identity, keys) has a branch of its own, so domains evolve independently
and ``upgrade heads`` brings a database of any age up to date.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import DeclarativeBase, Session

from emolens.core.fileio import private_dir

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x656D6F6C656E73  # "emolens": one advisory lock id for schema changes


class Base(DeclarativeBase):
    """Declarative base of every table; the migrations, not ``create_all``, create them."""


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets readers work beside one writer; busy_timeout makes concurrent writers queue
    # instead of failing; synchronous=FULL makes a committed row survive a power cut.
    # secure_delete zeroes what is deleted (uploads, people); auto_vacuum=INCREMENTAL (taken by a
    # new file, or an old one at its next VACUUM) lets ``reclaim`` give freed space back.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cur.execute("PRAGMA secure_delete=ON")
    _retry_busy(cur, "PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _retry_busy(cur, sql: str, wait_s: float = 30.0) -> None:
    """Run ``sql``, retrying while SQLite says the database is locked.

    A connection's first statement can meet SQLITE_BUSY *without* the busy handler being
    consulted: while another process runs WAL recovery or the last connection cleans up the
    WAL on close (sqlite.org/wal.html#busy). Both last milliseconds, so waiting is the answer.
    """
    deadline = time.monotonic() + wait_s
    delay = 0.01
    while True:
        try:
            cur.execute(sql)
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _private_file(path: Path) -> None:
    """Create the database file readable by its owner only (names, face embeddings, key hashes):
    SQLite gives its -wal and -shm files the database file's permissions. An existing file that
    others may read is made private too."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if p.stat().st_mode & 0o077:
                p.chmod(0o600)


def get_engine(url: str) -> Engine:
    """The engine for ``url`` (``Workspace.db_url``), migrated to the newest schema."""
    return _engine(url)


@lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not path.startswith("file:"):
            _private_file(Path(path))
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        # A server that does not answer fails the connection after 10 s instead of the OS's minutes.
        args = {"connect_timeout": 10} if url.startswith("postgresql") else {}
        engine = create_engine(url, pool_pre_ping=True, connect_args=args)
    migrate(engine)
    return engine


def migrate(engine: Engine) -> None:
    """Upgrade the database to the newest revision of every branch (a no-op when it is current)."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    heads = set(ScriptDirectory.from_config(cfg).get_heads())
    with engine.connect() as conn:
        if set(MigrationContext.configure(conn).get_current_heads()) == heads:
            return
    with _migration_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Several server workers may open a new database at once; the others wait here until the
            # first commits, then find it current (upgrade is a no-op). Held until this commit.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Several processes may open a new SQLite file at once: only one may create the tables.
    (PostgreSQL takes an advisory lock inside the migration's transaction instead.)"""
    if engine.url.get_backend_name() != "sqlite" or not engine.url.database:
        yield
        return
    from filelock import FileLock

    with FileLock(f"{engine.url.database}.migrate.lock", timeout=60):
        yield


def reclaim(engine: Engine, deleted: bool = False) -> None:
    """SQLite: give the pages freed by deletions back to the file system and truncate the
    write-ahead log, so neither keeps a copy of deleted rows. A file made before auto_vacuum was set
    is vacuumed once, which switches it to incremental vacuum. A no-op on other databases (their
    own vacuum reclaims space)."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if not deleted and not conn.exec_driver_sql("PRAGMA freelist_count").scalar():
            return  # nothing deleted since the last time
        # A truncating checkpoint holds new writers back while it waits for readers: not for long.
        conn.exec_driver_sql("PRAGMA busy_timeout=2000")
        try:
            if conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() != 2:
                conn.exec_driver_sql("VACUUM")
            else:
                # sqlite3's execute steps a statement once (one page); a script runs it to the end
                conn.connection.driver_connection.executescript("PRAGMA incremental_vacuum;")
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.exec_driver_sql("PRAGMA busy_timeout=30000")


@contextmanager
def session(url: str) -> Iterator[Session]:
    """A transaction: everything inside is committed together, or nothing is."""
    with Session(get_engine(url), expire_on_commit=False) as s, s.begin():
        yield s


def check_writable(url: str) -> None:
    """Raise StorageError when the database cannot be written (a read-only file or folder, a
    read-only server): a program that must write (the server) says so when it starts, not at its
    first write."""
    from sqlalchemy.exc import SQLAlchemyError

    from emolens.core.errors import StorageError

    try:
        with get_engine(url).connect() as conn:
            if conn.dialect.name == "sqlite":
                version = int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)
                conn.exec_driver_sql(f"PRAGMA user_version = {version}")  # a write that changes nothing
                conn.rollback()
            elif (
                conn.dialect.name == "postgresql"
                and conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "on"
            ):
                raise StorageError("the database is read-only (transaction_read_only is on)")
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip()
        raise StorageError(
            f"the database cannot be written ({reason}): check the permissions of the database "
            "file and its folder ($EMOLENS_HOME), or EMOLENS_DATABASE_URL"
        ) from exc
