"""Schema migrations with alembic, under a database-wide lock.

``migrate()`` is safe to run from many replicas at once (``watch --migrate``):
MariaDB's ``GET_LOCK``, PostgreSQL's advisory lock, or a file lock for SQLite
let one of them migrate while the others wait, then find nothing to do.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from feedwatch.errors import DatabaseUnavailableError, SchemaMismatchError
from feedwatch.store import dialects
from feedwatch.store.connection import connect, redact

_HERE = Path(__file__).parent / "migrations"
LOCK_KEY = "feedwatch_migrate"


def _config(prefix: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.attributes["prefix"] = prefix
    return cfg


def version_table(prefix: str) -> str:
    return f"{prefix}alembic_version"


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config("")).get_current_head()
    if head is None:
        raise RuntimeError("feedwatch ships no migrations")
    return head


def known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(_config("")).walk_revisions()}


def current_revision(engine: Engine, prefix: str = "") -> str | None:
    with _connected(engine) as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": version_table(prefix)})
        return ctx.get_current_revision()


def migrate(url_or_engine: str | Engine, *, prefix: str = "", timeout: float = 300) -> str:
    """Bring the schema to the newest revision; return it."""
    owned = isinstance(url_or_engine, str)
    engine = connect(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        with _locked(engine, timeout), _connected(engine) as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": version_table(prefix)})
            current = ctx.get_current_revision()
            conn.commit()
            if current is not None and current not in known_revisions():
                check_schema(engine, prefix=prefix)  # raises: newer than this code knows
            cfg = _config(prefix)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
    finally:
        if owned:
            engine.dispose()
    return head_revision()


def check_schema(engine: Engine, *, prefix: str = "") -> None:
    """Refuse, with a message that says what to do, a schema this code does not know."""
    current = current_revision(engine, prefix)
    head = head_revision()
    if current == head:
        return
    where = redact(engine.url.render_as_string(hide_password=False))
    if current is None:
        with _connected(engine) as conn:
            tables = inspect(conn).get_table_names()
        hint = "" if f"{prefix}partitions" not in tables else " (tables exist but are unversioned)"
        raise SchemaMismatchError(
            f"the database at {where} has no feedwatch schema{hint}: "
            "run `feedwatch migrate` (or `watch --migrate`) first"
        )
    if current not in known_revisions():
        raise SchemaMismatchError(
            f"the database at {where} has schema revision {current!r}, newer than this "
            f"feedwatch knows (its newest is {head!r}): upgrade feedwatch"
        )
    raise SchemaMismatchError(
        f"the database at {where} has schema revision {current!r}, older than this feedwatch "
        f"needs ({head!r}): run `feedwatch migrate`"
    )


@contextlib.contextmanager
def _connected(engine: Engine) -> Iterator[Connection]:
    try:
        conn = engine.connect()
    except DBAPIError as error:
        raise DatabaseUnavailableError(
            f"cannot reach the database at "
            f"{redact(engine.url.render_as_string(hide_password=False))}: "
            f"{str(getattr(error, 'orig', error)).splitlines()[0]}"
        ) from None
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def _locked(engine: Engine, timeout: float) -> Iterator[None]:
    if dialects.name(engine) == "sqlite":
        database = engine.url.database or "feedwatch"
        with open(f"{database}.migrate-lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        return
    with _connected(engine) as conn:
        dialects.acquire_lock(conn, LOCK_KEY, timeout)
        conn.commit()
        try:
            yield
        finally:
            dialects.release_lock(conn, LOCK_KEY)
            conn.commit()
