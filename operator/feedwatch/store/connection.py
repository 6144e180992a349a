"""Opening the database: URL checks, pooling, and per-dialect session setup."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from sqlalchemy import create_engine, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from feedwatch.errors import DatabaseURLError
from feedwatch.store.dialects import SUPPORTED

#: Per thread: whether a statement reached the database in the current transaction.
statements = threading.local()

_DRIVERS = {"sqlite": {"pysqlite"}, "mysql": {"pymysql"}, "mariadb": {"pymysql"}, "postgresql": {"psycopg"}}


def redact(url: str) -> str:
    """The URL with its password hidden, safe for logs and errors."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def connect(url: str, *, pool_size: int = 5, echo: bool = False) -> Engine:
    """An engine for ``url``, checked and set up for feedwatch.

    Connections are pooled and pre-pinged (a new PyMySQL connection costs tens
    of milliseconds); MariaDB and PostgreSQL run at READ COMMITTED so that
    enqueues and result commits do not take gap locks on each other's rows.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseURLError(
            f"cannot parse the database URL {redact(url)!r}; expected one of: "
            + ", ".join(SUPPORTED.values())
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in _DRIVERS:
        raise DatabaseURLError(
            f"unsupported database {backend!r} in {redact(url)!r}; feedwatch supports "
            + ", ".join(SUPPORTED.values())
        )
    driver = driver or {"sqlite": "pysqlite", "postgresql": "psycopg2"}.get(backend, "mysqldb")
    if driver not in _DRIVERS[backend]:
        wanted = next(iter(_DRIVERS[backend]))
        raise DatabaseURLError(
            f"unsupported driver {driver!r} for {backend} in {redact(url)!r}; use {backend}+{wanted}://"
        )
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs.update(
            pool_size=pool_size,
            max_overflow=pool_size,
            # No pre-ping and no reset-on-return: each costs a round trip per
            # transaction, and every checkout already ends in COMMIT or ROLLBACK.
            # A stale pooled connection fails at its first statement, which the
            # store retries once (nothing was applied), see StoreBase.transaction.
            pool_pre_ping=False,
            pool_reset_on_return=None,
            pool_recycle=1800,
            isolation_level="READ COMMITTED",
        )
        if backend in ("mysql", "mariadb"):
            kwargs["connect_args"] = {"connect_timeout": 10, "read_timeout": 60, "write_timeout": 60}
        else:
            kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError as e:
        raise DatabaseURLError(f"cannot load the driver for {redact(url)!r}: {e}") from None
    if backend == "sqlite":
        _setup_sqlite(engine)

    @event.listens_for(engine, "after_cursor_execute")
    def _executed(*_: Any) -> None:
        statements.seen = True

    return engine


def _setup_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout, and BEGIN IMMEDIATE so writers queue instead of deadlocking."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        readonly = conn.get_execution_options().get("feedwatch_readonly")
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")
