"""Reading feeds' backlogs for the autoscaler: few connections, bounded waits.

The store owns the query (:meth:`Store.feed_backlog`); this module only decides
how it is run from the operator's event loop:

- One small engine per database URL, shared by every FeedWatcher on that
  database (one ``Store`` per table prefix on top of it): at most
  ``pool_size + max_overflow`` connections per database, so 50 FeedWatchers
  on one database hold 1-2 connections, not 50.
- A server-side statement timeout on each connection (MariaDB
  ``max_statement_time``, PostgreSQL ``statement_timeout``; SQLite a busy
  timeout), and an overall asyncio timeout around the call, which runs in a
  small thread pool of its own: a slow or unreachable database never stalls
  the operator's event loop or kopf's executor.
- Engines unused for a while are disposed (a Secret's URL changed, a
  FeedWatcher went away).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError

from feedwatch.errors import FeedwatchError
from feedwatch.store import Store, connect
from feedwatch.store.connection import redact
from feedwatch.store.records import Backlog


class BacklogReadError(FeedwatchError):
    """The backlog could not be read."""


@dataclass
class _Database:
    engine: Engine
    stores: dict[str, Store] = field(default_factory=dict)
    used: float = 0.0


class BacklogReader:
    """Runs :meth:`Store.feed_backlog` for the operator; one per operator process."""

    def __init__(
        self,
        *,
        statement_timeout: float = 5.0,
        timeout: float = 10.0,
        pool_size: int = 1,
        idle_dispose: float = 600.0,
        threads: int = 4,
    ) -> None:
        if not 1 <= pool_size <= 2:
            raise ValueError(f"pool_size must be 1 or 2, got {pool_size}")
        self.statement_timeout = statement_timeout
        self.timeout = timeout
        self.pool_size = pool_size
        self.idle_dispose = idle_dispose
        self._databases: dict[str, _Database] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="backlog")

    async def read(self, url: str, *, feed: str, prefix: str = "", limit: int) -> Backlog:
        """The backlog of ``feed``; raises :class:`BacklogReadError` with a message safe to show."""
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._executor, self._read, url, feed, prefix, limit)
        try:
            return await asyncio.wait_for(work, timeout=self.timeout)
        except TimeoutError:
            raise BacklogReadError(
                f"the backlog read from {redact(url)} took more than {self.timeout:g} s"
            ) from None
        except BacklogReadError:
            raise
        except Exception as error:
            raise BacklogReadError(
                f"cannot read the backlog from {redact(url)}: {_first_line(error)}"
            ) from error

    def _read(self, url: str, feed: str, prefix: str, limit: int) -> Backlog:
        store = self.store(url, prefix)
        return store.feed_backlog(feed, limit=limit)

    def store(self, url: str, prefix: str = "") -> Store:
        """The shared store of ``url`` and ``prefix`` (its engine is shared by every prefix)."""
        now = time.monotonic()
        with self._lock:
            for key, stale in list(self._databases.items()):
                if key != url and now - stale.used > self.idle_dispose:
                    del self._databases[key]
                    stale.engine.dispose()
            database = self._databases.get(url)
            if database is None:
                database = _Database(self._engine(url))
                self._databases[url] = database
            database.used = now
            store = database.stores.get(prefix)
            if store is None:
                store = Store.from_engine(database.engine, prefix=prefix)
                database.stores[prefix] = store
            return store

    def _engine(self, url: str) -> Engine:
        try:
            backend = make_url(url).get_backend_name()
        except ArgumentError:
            raise BacklogReadError(f"cannot parse the database URL {redact(url)!r}") from None
        # connect(): max_overflow = pool_size, so at most 2 * pool_size connections per database.
        engine = connect(url, pool_size=self.pool_size)
        seconds = self.statement_timeout

        @event.listens_for(engine, "connect")
        def _bound_statements(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                if backend in ("mysql", "mariadb"):
                    cursor.execute(f"SET SESSION max_statement_time = {seconds:.3f}")
                elif backend == "postgresql":
                    cursor.execute(f"SET statement_timeout = {math.ceil(seconds * 1000)}")
                else:
                    cursor.execute(f"PRAGMA busy_timeout = {math.ceil(seconds * 1000)}")
            finally:
                cursor.close()
            if backend == "postgresql":
                dbapi_connection.commit()

        return engine

    def connections(self) -> int:
        """Connections held now (checked out or idle in the pools), across all databases."""
        with self._lock:
            total = 0
            for database in self._databases.values():
                pool: Any = database.engine.pool
                total += int(pool.checkedin()) + int(pool.checkedout()) if hasattr(pool, "checkedin") else 0
            return total

    def close(self) -> None:
        """Dispose of every engine and stop the threads (safe to call twice)."""
        with self._lock:
            for database in self._databases.values():
                database.engine.dispose()
            self._databases.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__
