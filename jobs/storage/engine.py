"""Engines for both supported backends, and the one place driver errors are translated."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from jobs.errors import StorageError


def _psycopg() -> Any:
    """psycopg if something (a PostgreSQL engine) imported it, else ``None``.

    No psycopg error can exist before it is imported, and importing it costs a command on
    SQLite a tenth of a second; SQLAlchemy imports it when a PostgreSQL engine is created.
    """
    return sys.modules.get("psycopg")


DEFAULT_SQLITE_FILE = "matchjobs.db"


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and route them through psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if not (url.startswith("postgresql+psycopg://") or url.startswith("sqlite")):
        raise StorageError(
            f"database URL must be postgresql://… or sqlite:///…; got {redact(url)!r}"
        )
    return url


def missing_sqlite_file(url: str) -> str | None:
    """The path of an SQLite URL's file when that file does not exist, else ``None``.

    Connecting creates a missing file; a command that only reads checks this first.
    """
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return None
    if not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return None if Path(database).exists() else database


def redact(url: str) -> str:
    """The URL without its password, for logs and job metadata."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while a job writes; busy_timeout makes writers queue, not fail.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_engine(url: str, **kwargs: Any) -> sa.Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; emit it ourselves so that
        # a transaction really starts when SQLAlchemy begins one (needed for atomic swaps).
        event.listen(engine, "connect", _disable_pysqlite_autobegin)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **kwargs)


def _disable_pysqlite_autobegin(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: sa.Connection) -> None:
    mode = connection.get_execution_options().get("sqlite_begin", "")
    connection.exec_driver_sql(f"BEGIN {mode}".strip())


def writer(engine: sa.Engine) -> sa.Engine:
    """The engine for read-then-write transactions.

    On SQLite such transactions begin ``IMMEDIATE``: two deferred transactions that both read
    and then both write deadlock, and SQLite answers one of them "database is locked" at once
    instead of waiting. Readers keep the plain engine so they never queue behind a writer.
    """
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin="IMMEDIATE")
    return engine


def is_postgres(bind: sa.Engine | sa.Connection) -> bool:
    return bind.dialect.name == "postgresql"


# SQLSTATEs after which the same statements may succeed on a new attempt: the server shut
# the session down (admin command, crash, still starting) or aborted the transaction to
# resolve a conflict. Class 08 (connection exception) is matched by its prefix.
TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "57P01",  # admin_shutdown (pg_terminate_backend, smart/fast shutdown)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
    }
)


def is_transient(exc: BaseException) -> bool:
    """True for a driver error worth retrying: a lost connection, a shutdown, a conflict.

    SQLAlchemy marks errors that invalidated the connection (``connection_invalidated``);
    psycopg gives a SQLSTATE from :data:`TRANSIENT_SQLSTATES` or class 08, or none at all on
    an ``OperationalError`` that libpq raised itself (connection refused, closed, reset).
    Everything else — constraint violations, syntax, SQLite's errors — is not transient.
    """
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    orig = getattr(exc, "orig", None) if isinstance(exc, sa.exc.DBAPIError) else exc
    psycopg = _psycopg()
    if psycopg is None or not isinstance(orig, psycopg.Error):
        return False
    state = orig.sqlstate
    if state is None:
        return isinstance(orig, psycopg.OperationalError)
    return state in TRANSIENT_SQLSTATES or state.startswith("08")


def _driver_errors() -> tuple[type[Exception], ...]:
    psycopg = _psycopg()
    return (sqlite3.Error,) if psycopg is None else (sqlite3.Error, psycopg.Error)


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn driver/SQLAlchemy errors into ``StorageError`` naming the operation."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StorageError(f"{what} failed: {detail}", transient=is_transient(exc)) from exc
    except _driver_errors() as exc:
        # Raw driver cursors (COPY, executemany on the bulk paths) raise the driver's own.
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StorageError(f"{what} failed: {detail}", transient=is_transient(exc)) from exc


def create_scratch_database(engine: sa.Engine, prefix: str) -> str:
    """Create an empty PostgreSQL database beside ``engine``'s; return its URL.

    Needs the CREATEDB privilege. The name is ``<prefix>_<random hex>``.
    """
    import uuid

    if not is_postgres(engine):
        raise ValueError(
            f"scratch databases are created on PostgreSQL only; got {engine.dialect.name}"
        )
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = engine.execution_options(isolation_level="AUTOCOMMIT")
    with translate_errors(f"create scratch database {name}"), admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    return engine.url.set(database=name).render_as_string(hide_password=False)


def drop_database(engine: sa.Engine, url: str) -> None:
    """Drop the PostgreSQL database named by ``url`` (on ``engine``'s server), if it exists."""
    name = sa.engine.make_url(url).database
    admin = engine.execution_options(isolation_level="AUTOCOMMIT")
    with translate_errors(f"drop database {name}"), admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
