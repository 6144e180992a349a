"""The FeedWatcher's database: its URL from the Secret, migrations, the feed row.

``resolve_url`` checks a URL read from a Secret without ever echoing it
(messages name the Secret and key); ``identity`` is what makes two
FeedWatchers the same feed (host, port and database name; credentials
ignored). ``Databases.prepare`` runs the blocking work in its own small
thread pool, so one slow or unreachable database never stalls the operator's
event loop or its API calls.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from feedwatch.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    DatabaseURLError,
    SchemaMismatchError,
)
from feedwatch.operator import problems
from feedwatch.operator.problems import ProblemError
from feedwatch.producer import Feed
from feedwatch.store import Store, connect
from feedwatch.store.connection import cluster_nodes
from feedwatch.store.dialects import SUPPORTED
from feedwatch.store.migrating import check_schema, migrate

MIGRATE_LOCK_TIMEOUT = 60.0  # s: another process migrating the same database
PROBE_TIMEOUT = 5.0  # s: to connect and, for MySQL, to hear the server's greeting


@dataclass(frozen=True)
class Identity:
    """Where a feed lives: two FeedWatchers with the same identity are the same feed."""

    backend: str
    host: str
    port: int | None
    database: str
    prefix: str
    feed: str
    #: Every server of a Galera URL (the first is ``host``/``port``); not part of the
    #: identity, which names a cluster by its first node.
    nodes: tuple[tuple[str, int], ...] = field(default=(), compare=False)

    def describe(self) -> str:
        where = f"{self.host}:{self.port}" if self.port else self.host
        return f"feed {self.feed!r} (table prefix {self.prefix!r}) on {self.backend} {where}/{self.database}"


def resolve_url(raw: bytes, *, secret: str, key: str) -> str:
    """The database URL in ``raw``; raises a ProblemError that names the Secret, never the value."""
    where = f"Secret {secret!r}, key {key!r}"
    try:
        text = raw.decode("utf-8").strip()
        parsed = make_url(text)
    except (UnicodeDecodeError, ArgumentError, ValueError):
        raise ProblemError(
            problems.INVALID_DATABASE_URL,
            f"{where} does not hold a database URL; expected e.g. {SUPPORTED['postgresql']}",
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        raise ProblemError(
            problems.UNSUPPORTED_DATABASE,
            f"{where} holds a SQLite URL: watcher pods cannot share a SQLite file; "
            f"use MariaDB/MySQL ({SUPPORTED['mysql']}) or PostgreSQL ({SUPPORTED['postgresql']})",
        )
    wanted = {"mysql": "pymysql", "mariadb": "pymysql", "postgresql": "psycopg"}.get(backend)
    if wanted is None or driver != wanted:
        raise ProblemError(
            problems.INVALID_DATABASE_URL,
            f"{where} holds a {parsed.drivername!r} URL; feedwatch supports "
            f"{SUPPORTED['mysql']} and {SUPPORTED['postgresql']}",
        )
    if not parsed.host or not parsed.database:
        raise ProblemError(
            problems.INVALID_DATABASE_URL,
            f"{where} holds a URL without a host or database name; expected e.g. {SUPPORTED['mysql']}",
        )
    if backend in ("mysql", "mariadb"):
        try:
            cluster_nodes(text)
        except DatabaseURLError as error:  # a host= the store could not use; the message hides the password
            raise ProblemError(problems.INVALID_DATABASE_URL, f"{where}: {error}") from None
    elif "host" in parsed.query:
        raise ProblemError(
            problems.INVALID_DATABASE_URL,
            f"{where}: several hosts (host= in the query) are supported for MariaDB only",
        )
    return text


def identity(url: str, *, prefix: str, feed: str) -> Identity:
    parsed = make_url(url)
    backend = parsed.drivername.partition("+")[0].replace("mariadb", "mysql")
    nodes = tuple((n.host, n.port) for n in cluster_nodes(url)) if backend == "mysql" else ()
    return Identity(
        backend=backend,
        host=str(parsed.host or "").lower(),
        port=parsed.port,
        database=str(parsed.database or ""),
        prefix=prefix,
        feed=feed,
        nodes=nodes,
    )


def probe(target: Identity, *, timeout: float = PROBE_TIMEOUT) -> None:
    """Fail fast (OSError) when the server does not answer: connect, and for MySQL read its greeting.

    The drivers wait up to their read timeout (a minute) for a server that accepts the
    connection but never speaks; the operator must not lose a worker that long.
    """
    default_port = 5432 if target.backend == "postgresql" else 3306
    servers = list(target.nodes) or [(target.host, target.port or default_port)]
    for number, server in enumerate(servers, start=1):
        try:
            _probe_server(server, mysql=target.backend == "mysql", timeout=timeout)
        except OSError:
            if number == len(servers):  # one node of a cluster that answers is enough
                raise
        else:
            return


def _probe_server(server: tuple[str, int], *, mysql: bool, timeout: float) -> None:
    with socket.create_connection(server, timeout=timeout) as sock:
        if mysql:  # the server speaks first
            sock.settimeout(timeout)
            if not sock.recv(1):
                raise ConnectionError("the server closed the connection before its greeting")


class Databases:
    """Blocking database work of the operator, in a thread pool of its own."""

    def __init__(self, *, workers: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="feedwatch-db")
        #: (host/port/database, prefix) already migrated by this process.
        self._migrated: set[tuple[Any, ...]] = set()
        #: One Store (a small engine) per URL and prefix, shared by the FeedWatchers there.
        self._stores: dict[tuple[str, str], Store] = {}
        self._store_locks: dict[tuple[str, str], threading.Lock] = {}
        #: One migration at a time per schema: the others wait, then find it done.
        self._schema_locks: dict[tuple[Any, ...], threading.Lock] = {}
        self._guard = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._guard:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()

    def _store(self, url: str, prefix: str) -> Store:
        """The shared Store of ``url`` and ``prefix``, connected once before anyone else uses it.

        A Store registers engine listeners when it is made, and SQLAlchemy's first-connect
        hooks must not run in two threads at once: both happen here, under a lock per key.
        """
        key = (url, prefix)
        with self._guard:
            store = self._stores.get(key)
            lock = self._store_locks.setdefault(key, threading.Lock())
        if store is not None:
            return store
        with lock:
            with self._guard:
                store = self._stores.get(key)
            if store is None:
                store = Store.from_engine(connect(url, pool_size=2), prefix=prefix)
                try:
                    store.engine.connect().close()
                except BaseException:
                    store.close()
                    raise
                with self._guard:
                    self._stores[key] = store
            return store

    def _drop_store(self, url: str, prefix: str) -> None:
        with self._guard:
            store = self._stores.pop((url, prefix), None)
        if store is not None:
            store.close()

    def _schema_lock(self, key: tuple[Any, ...]) -> threading.Lock:
        with self._guard:
            return self._schema_locks.setdefault(key, threading.Lock())

    async def prepare(
        self,
        url: str,
        *,
        target: Identity,
        migrate_schema: bool,
        feed_settings: Mapping[str, Any],
    ) -> None:
        """Migrate (or check) the schema, create the feed row, apply ``feed_settings``.

        Raises ProblemError: DatabaseUnreachable, SchemaMismatch, or InvalidSpec
        for feed settings the feed refuses.
        """
        await asyncio.get_running_loop().run_in_executor(
            self._pool, self._prepare, url, target, migrate_schema, dict(feed_settings)
        )

    def _prepare(
        self, url: str, target: Identity, migrate_schema: bool, feed_settings: dict[str, Any]
    ) -> None:
        schema_key = (target.backend, target.host, target.port, target.database, target.prefix)
        try:
            probe(target)
            store = self._store(url, target.prefix)
            engine = store.engine
            if migrate_schema:
                with self._schema_lock(schema_key):
                    if schema_key not in self._migrated:
                        migrate(engine, prefix=target.prefix, timeout=MIGRATE_LOCK_TIMEOUT)
                        self._migrated.add(schema_key)
            else:
                check_schema(engine, prefix=target.prefix)
            feed = Feed.create(store, target.feed)
            if feed_settings:
                current = feed.settings
                if any(getattr(current, name) != value for name, value in feed_settings.items()):
                    feed.update(**feed_settings)
        except SchemaMismatchError as error:
            self._migrated.discard(schema_key)
            raise ProblemError(problems.SCHEMA_MISMATCH, f"{target.describe()}: {error}") from None
        except ConfigurationError as error:
            raise ProblemError(problems.INVALID_SPEC, f"spec.feedSettings: {error}") from None
        except (DatabaseUnavailableError, DBAPIError, OSError) as error:
            self._migrated.discard(schema_key)
            self._drop_store(url, target.prefix)
            first = str(getattr(error, "orig", None) or error).splitlines()[0]
            if isinstance(error, TimeoutError):
                first = f"no answer within {PROBE_TIMEOUT:.0f} s"
            if first.startswith("cannot reach the database at "):  # the store's wording: keep the cause
                first = first.split(": ", 1)[-1]
            raise ProblemError(
                problems.DATABASE_UNREACHABLE, f"cannot reach the database of {target.describe()}: {first}"
            ) from None
