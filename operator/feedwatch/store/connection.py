"""Opening the database: URL checks, pooling, and per-dialect session setup.

A MariaDB URL may name several servers of one Galera cluster: the first in
the address, the others as ``host=`` query parameters (SQLAlchemy's spelling
for several hosts)::

    mysql+pymysql://user:password@node1:3306/feedwatch?host=node2:3306&host=node3:3306

Each new connection goes to the first node that answers, starting from the
next node in turn, so the pool spreads over the cluster; when a node dies its
connections fail, the pool is invalidated and the next connections go to the
others, while the store retries as it does for any database trouble.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, event, make_url
from sqlalchemy.engine import URL, Engine, ExceptionContext
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from feedwatch.errors import DatabaseURLError
from feedwatch.store.dialects import SUPPORTED

#: Per thread: whether a statement reached the database in the current transaction.
statements = threading.local()

_DRIVERS = {"sqlite": {"pysqlite"}, "mysql": {"pymysql"}, "mariadb": {"pymysql"}, "postgresql": {"psycopg"}}

#: Galera: reads (1), updates and deletes (2) first wait until this node has applied
#: every write the cluster committed before them, so what they see is current.
WSREP_SYNC_WAIT = 3
#: With several nodes to try, a node that accepts but does not answer is skipped soon.
NODE_CONNECT_TIMEOUT = 3
#: MariaDB errors after which a connection is dropped: the node left the cluster's
#: primary component (1047 "WSREP has not yet prepared node for application use").
_NODE_UNUSABLE = {1047}


@dataclass(frozen=True)
class Node:
    """One server of a cluster URL."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


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
    nodes: list[Node] = []
    if backend in ("mysql", "mariadb"):
        parsed, nodes = _nodes(parsed, url)
    elif "host" in parsed.query:
        raise DatabaseURLError(
            f"several hosts (host= in the query) are supported for MariaDB only, not in {redact(url)!r}"
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
            timeout = NODE_CONNECT_TIMEOUT if len(nodes) > 1 else 10
            kwargs["connect_args"] = {"connect_timeout": timeout, "read_timeout": 60, "write_timeout": 60}
        else:
            kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError as e:
        raise DatabaseURLError(f"cannot load the driver for {redact(url)!r}: {e}") from None
    if backend == "sqlite":
        _setup_sqlite(engine)
    elif backend in ("mysql", "mariadb"):
        _setup_mariadb(engine, nodes)

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


def cluster_nodes(url: str) -> list[Node]:
    """The servers a MariaDB URL names, in order (its address, then each ``host=``)."""
    return _nodes(make_url(url), url)[1]


def _nodes(parsed: URL, url: str) -> tuple[URL, list[Node]]:
    """The URL's servers (address first, then each ``host=``), and the URL without ``host=``."""
    extra = parsed.query.get("host", ())
    listed = [extra] if isinstance(extra, str) else list(extra)
    nodes = [Node(parsed.host, parsed.port or 3306)] if parsed.host else []
    for item in listed:
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "3306")
        if not host or not port.isdigit():
            raise DatabaseURLError(
                f"cannot read the node {item!r} in {redact(url)!r}: write each further node as "
                "host=name:port, e.g. mysql+pymysql://user:password@node1:3306/db?host=node2:3306&host=node3:3306"
            )
        nodes.append(Node(host.strip("[]"), int(port)))
    if listed and not nodes[0:1]:
        raise DatabaseURLError(f"no database host in {redact(url)!r}")
    if len(set(nodes)) != len(nodes):
        raise DatabaseURLError(f"a node is listed twice in {redact(url)!r}")
    first = nodes[0] if nodes else None
    parsed = parsed.difference_update_query(["host"])
    if first is not None:
        parsed = parsed.set(host=first.host, port=first.port)
    return parsed, nodes


def _setup_mariadb(engine: Engine, nodes: list[Node]) -> None:
    """Spread connections over several nodes; make Galera reads causal; drop unusable nodes' sessions."""
    if len(nodes) > 1:
        turn = itertools.count(random.randrange(len(nodes)))  # noqa: S311 - spreading, not security
        lock = threading.Lock()

        @event.listens_for(engine, "do_connect")
        def _first_reachable(dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
            with lock:
                start = next(turn)
            failures: list[str] = []
            for step in range(len(nodes)):
                node = nodes[(start + step) % len(nodes)]
                try:
                    connection = dialect.loaded_dbapi.connect(
                        *cargs, **{**cparams, "host": node.host, "port": node.port}
                    )
                except Exception as error:  # any failure: try the next node
                    failures.append(
                        f"{node}: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
                    )
                    continue
                problem = _galera_problem(connection)
                if problem is None:
                    return connection
                connection.close()
                failures.append(f"{node}: {problem}")
            raise dialect.loaded_dbapi.OperationalError(
                2003, "no node of the cluster is usable: " + "; ".join(failures)
            )

    @event.listens_for(engine, "connect")
    def _causal_reads(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if _wsrep_on(cursor):
                cursor.execute(f"SET SESSION wsrep_sync_wait = {WSREP_SYNC_WAIT}")
        finally:
            cursor.close()

    @event.listens_for(engine, "handle_error")
    def _unusable_node(context: ExceptionContext) -> None:
        args = getattr(context.original_exception, "args", ())
        if args and args[0] in _NODE_UNUSABLE:
            context.is_disconnect = True


def _galera_problem(connection: Any) -> str | None:
    """Why this Galera node cannot serve now (not in the primary component, not synced), or None."""
    cursor = connection.cursor()
    try:
        if not _wsrep_on(cursor):
            return None
        cursor.execute("SHOW STATUS WHERE Variable_name IN ('wsrep_ready', 'wsrep_local_state_comment')")
        status = {str(name): str(value) for name, value in cursor.fetchall()}
    finally:
        cursor.close()
    ready = status.get("wsrep_ready", "ON")
    state = status.get("wsrep_local_state_comment", "Synced")
    if ready == "ON" and state == "Synced":
        return None
    return f"Galera node not ready (wsrep_ready={ready}, state={state})"


def _wsrep_on(cursor: Any) -> bool:
    """Whether the server replicates with Galera."""
    cursor.execute("SHOW VARIABLES LIKE 'wsrep_on'")
    row = cursor.fetchone()
    return row is not None and str(row[1]).upper() == "ON"
