"""Schema migrations with alembic, under a database-wide lock.

``migrate()`` is safe to run from many replicas at once (``watch --migrate``):
MariaDB's ``GET_LOCK``, PostgreSQL's advisory lock, or a file lock for SQLite
let one of them migrate while the others wait, then find nothing to do.

On a Galera cluster ``GET_LOCK`` holds on one node only, so there the lock is
a row of an InnoDB table, taken by a versioned UPDATE that the cluster
certifies (two nodes taking it at once: one commit fails with 1213 and
retries), kept alive by a heartbeat, and free again when its holder stops
beating for ``LOCK_STALE`` seconds. DDL that still collides with another
node's (1050 table exists, 1684 concurrent DDL, 1213) is retried after
reading the revision again.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from feedwatch.errors import DatabaseUnavailableError, SchemaMismatchError
from feedwatch.store import dialects
from feedwatch.store.connection import connect, redact
from feedwatch.store.schema import check_prefix

_HERE = Path(__file__).parent / "migrations"
LOCK_KEY = "feedwatch_migrate"
#: Galera: the table of the cluster-wide lock row, and how it is kept.
LOCK_TABLE = "feedwatch_migrate_lock"
LOCK_STALE = 30.0
LOCK_HEARTBEAT = 3.0
#: Galera conflicts worth another try: deadlock/certification failure, lock wait
#: timeout, table exists, table skipped during concurrent DDL, node not ready.
_CONFLICTS = {1213, 1205, 1050, 1684, 1047}
_ATTEMPTS = 10

log = logging.getLogger(__name__)


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
    check_prefix(prefix)
    owned = isinstance(url_or_engine, str)
    engine = connect(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        with _locked(engine, timeout):
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    _upgrade(engine, prefix)
                    break
                except DBAPIError as error:
                    if _code(error) not in _CONFLICTS or attempt == _ATTEMPTS:
                        raise
                    log.info("migration collided (%s); reading the revision again", _code(error))
                    time.sleep(random.uniform(0.1, 0.5) * attempt)  # noqa: S311
    finally:
        if owned:
            engine.dispose()
    return head_revision()


def _upgrade(engine: Engine, prefix: str) -> None:
    with _connected(engine) as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": version_table(prefix)})
        current = ctx.get_current_revision()
        conn.commit()
        if current is not None and current not in known_revisions():
            check_schema(engine, prefix=prefix)  # raises: newer than this code knows
        if current == head_revision():
            return
        cfg = _config(prefix)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()


def _code(error: DBAPIError) -> int | None:
    args = getattr(error.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def check_schema(engine: Engine, *, prefix: str = "") -> None:
    """Refuse, with a message that says what to do, a schema this code does not know."""
    check_prefix(prefix)
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
        galera = dialects.name(engine) == "mysql" and _galera(conn)
    if galera:
        with _row_locked(engine, timeout):
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


def _galera(conn: Connection) -> bool:
    row = conn.execute(text("SHOW VARIABLES LIKE 'wsrep_on'")).first()
    conn.commit()
    return row is not None and str(row[1]).upper() == "ON"


def _retrying(engine: Engine, sql: str, params: dict[str, object], deadline: float) -> int:
    """Run one statement in its own transaction, again after a certification conflict; its row count."""
    while True:
        try:
            with _connected(engine) as conn:
                count = conn.execute(text(sql), params).rowcount
                conn.commit()
                return count
        except DBAPIError as error:
            if _code(error) not in _CONFLICTS or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.05, 0.3))  # noqa: S311


@contextlib.contextmanager
def _row_locked(engine: Engine, timeout: float) -> Iterator[None]:
    """Hold the cluster-wide migration lock row (Galera), beating while held."""
    deadline = time.monotonic() + timeout
    me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    _retrying(
        engine,
        f"CREATE TABLE IF NOT EXISTS {LOCK_TABLE} (name VARCHAR(64) NOT NULL PRIMARY KEY, "
        "holder VARCHAR(128) NULL, beat DATETIME(6) NULL) ENGINE=InnoDB",
        {},
        deadline,
    )
    _retrying(engine, f"INSERT IGNORE INTO {LOCK_TABLE} (name) VALUES (:k)", {"k": LOCK_KEY}, deadline)
    take = (
        f"UPDATE {LOCK_TABLE} SET holder = :me, beat = UTC_TIMESTAMP(6) WHERE name = :k AND "
        f"(holder IS NULL OR beat < UTC_TIMESTAMP(6) - INTERVAL {int(LOCK_STALE)} SECOND)"
    )
    while not _retrying(engine, take, {"me": me, "k": LOCK_KEY}, deadline):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"could not take the migration lock (row {LOCK_KEY!r} of {LOCK_TABLE}) in {timeout:.0f} s: "
                "another migration holds it"
            )
        time.sleep(random.uniform(0.2, 0.6))  # noqa: S311
    stop = threading.Event()

    def beat() -> None:
        sql = f"UPDATE {LOCK_TABLE} SET beat = UTC_TIMESTAMP(6) WHERE name = :k AND holder = :me"
        while not stop.wait(LOCK_HEARTBEAT):
            try:
                _retrying(engine, sql, {"me": me, "k": LOCK_KEY}, time.monotonic() + LOCK_HEARTBEAT)
            except Exception:  # a missed beat is retried at the next one
                log.warning("could not refresh the migration lock", exc_info=True)

    beater = threading.Thread(target=beat, name="migrate-lock-beat", daemon=True)
    beater.start()
    try:
        yield
    finally:
        stop.set()
        beater.join()
        release = f"UPDATE {LOCK_TABLE} SET holder = NULL, beat = NULL WHERE name = :k AND holder = :me"
        _retrying(engine, release, {"me": me, "k": LOCK_KEY}, time.monotonic() + 60)
