"""The store's shared machinery: tables, transactions, database time."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import re
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, Required, TypedDict, TypeVar

from sqlalchemy import Row, Table, event, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from feedwatch.errors import DatabaseUnavailableError, PartitionNotFoundError
from feedwatch.store import dialects, schema
from feedwatch.store.connection import redact, statements
from feedwatch.store.writegate import WriteGate

T = TypeVar("T")
_UNGATED = contextlib.nullcontext()
_HISTORY_COLUMNS = (
    "feed", "partition_pk", "item_pk", "event", "from_version", "from_status", "to_status",
    "gate", "attempt", "owner", "message", "at",
)  # fmt: skip
#: The columns each history row states; the feed (first) and the time (last) are per statement.
_HISTORY_ROW_COLUMNS = _HISTORY_COLUMNS[1:-1]


_HISTORY_TYPES = dict(
    zip(
        _HISTORY_COLUMNS,
        ("VARCHAR", "BIGINT", "BIGINT", "VARCHAR", "INTEGER", "VARCHAR", "VARCHAR", "INTEGER",
         "INTEGER", "VARCHAR", "TEXT", "TIMESTAMP"),
        strict=True,
    )
)  # fmt: skip

#: How a multi-row UPDATE's rows meet the table's: by key, fenced by the version read.
_JOIN = "{name}.pk = v.pk AND {name}.version = v.version"

#: The lease columns cleared when a partition is let go (released, closed, re-driven, cancelled).
RELEASE: dict[str, Any] = {"owner": None, "lease_until": None, "steal_by": None}


class HistoryEvent(TypedDict, total=False):
    """One history row as its writer states it (see :meth:`StoreBase.write_history`)."""

    event: Required[str]
    partition_pk: int | None
    item_pk: int | None
    from_version: int
    from_status: str | None
    to_status: str
    gate: int
    attempt: int | None
    owner: str | None
    message: str | None


#: One history row in the order of its columns (``_HISTORY_ROW_COLUMNS``): partition_pk,
#: item_pk, event, from_version, from_status, to_status, gate, attempt, owner, message.
HistoryTuple = tuple[
    int | None,
    int | None,
    str,
    int | None,
    str | None,
    str | None,
    int | None,
    int | None,
    str | None,
    str | None,
]


class Positional(NamedTuple):
    """A statement in the driver's placeholder style, and its parameter names in order."""

    sql: str
    names: tuple[str, ...]


log = logging.getLogger("feedwatch.store")

#: Errors and messages kept on rows are cut to this many characters.
MESSAGE_LIMIT = 2000
#: Rows per statement in bulk reads and writes (bounded statement size).
CHUNK = 1000


def bounded(message: str | None) -> str | None:
    """A message cut to :data:`MESSAGE_LIMIT` characters."""
    if message is None or len(message) <= MESSAGE_LIMIT:
        return message
    return message[: MESSAGE_LIMIT - 20] + " ...[truncated]"


def new_token() -> str:
    return uuid.uuid4().hex


def partition_not_found(feed: str, partition: str) -> PartitionNotFoundError:
    return PartitionNotFoundError(f"partition {partition!r} does not exist in feed {feed!r}")


class StoreBase:
    """Holds the engine and the tables; runs transactions with retries."""

    def __init__(self, engine: Engine, *, prefix: str = "") -> None:
        self.engine = engine
        self.dialect = dialects.name(engine)
        self.tables = schema.build(prefix)
        self.prefix = prefix
        self.url = redact(engine.url.render_as_string(hide_password=False))
        #: Seconds a transaction may idle and a statement may wait on a lock (server side).
        self.session_limit = 30.0
        event.listen(engine, "connect", self._limit_session)
        #: SQLite's writers queue here (see :mod:`feedwatch.store.writegate`).
        self.write_gate = WriteGate.for_file(engine.url.database) if self.dialect == "sqlite" else None

    def limit_sessions(self, lease_duration: float) -> None:
        """Bound idle transactions by the lease, and lock waits by a third of it.

        A watcher frozen inside a transaction (SIGSTOP, a VM pause, a cut
        network) then loses its transaction and its locks when its lease
        would expire, and the others' claims never wait on it for longer
        than a renewal period. New connections take the limits; the pool is
        emptied so that none is missed.
        """
        if lease_duration != self.session_limit:
            self.session_limit = lease_duration
            self.engine.dispose()

    def _limit_session(self, dbapi_connection: Any, _record: Any) -> None:
        idle = max(1, math.ceil(self.session_limit))
        wait = max(1, math.ceil(self.session_limit / 3))
        if self.dialect == "mysql":
            statements = [
                f"SET SESSION idle_transaction_timeout = {idle}",
                f"SET SESSION innodb_lock_wait_timeout = {wait}",
            ]
        elif self.dialect == "postgresql":
            statements = [
                f"SET idle_in_transaction_session_timeout = {idle * 1000}",
                f"SET lock_timeout = {wait * 1000}",
            ]
        else:
            return
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()
        if self.dialect == "postgresql":
            dbapi_connection.commit()

    # -- time -------------------------------------------------------------

    def now(self) -> datetime:
        """The database's clock (UTC, naive). SQLite has no server: the machine's clock."""
        if self.dialect == "sqlite":
            return datetime.now(UTC).replace(tzinfo=None)
        value = self.transaction(lambda c: c.execute(text(dialects.now_sql(self.dialect))).scalar())
        if not isinstance(value, datetime):
            raise TypeError(f"the database clock returned {value!r}")
        return value.replace(tzinfo=None)

    def ts(self, value: datetime | None) -> Any:
        """A timestamp as a raw-SQL parameter (SQLite stores text in SQLAlchemy's format)."""
        if value is None or self.dialect != "sqlite":
            return value
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")

    # -- transactions -----------------------------------------------------

    def transaction(self, work: Callable[[Connection], T], *, attempts: int = 8, readonly: bool = False) -> T:
        """Run ``work`` in one transaction, retrying it whole on deadlock or serialization failure.

        ``readonly`` transactions do not take SQLite's write lock; the others
        queue for it at the :class:`WriteGate`.
        """
        stale_retried = False
        give_up = time.monotonic() + self.session_limit / 2
        for attempt in range(1, attempts + 1):
            statements.seen = False
            try:
                gate = self.write_gate.held() if self.write_gate and not readonly else _UNGATED
                with gate, self.engine.connect() as conn:
                    if readonly:
                        conn.execution_options(feedwatch_readonly=True)
                    with conn.begin():
                        return work(conn)
            except IntegrityError:
                raise
            except DBAPIError as error:
                if dialects.is_disconnect(error) and not statements.seen and not stale_retried:
                    # A pooled connection that went stale fails at its first
                    # statement; nothing was applied, so one retry is safe.
                    stale_retried = True
                    continue
                if dialects.is_transient(error) and attempt < attempts and time.monotonic() < give_up:
                    log.debug("transaction retried after %s", type(error.orig).__name__)
                    time.sleep(random.uniform(0.005, 0.05) * attempt)  # noqa: S311
                    continue
                if dialects.is_disconnect(error):
                    raise DatabaseUnavailableError(
                        f"cannot reach the database at {self.url}: {_first_line(error)}"
                    ) from error
                raise
        raise AssertionError("unreachable")

    # -- partitions -------------------------------------------------------

    def lock_partition(self, conn: Connection, feed: str, partition: str, *columns: Any) -> Row[Any]:
        """The partition's ``columns``, its row locked until the transaction ends.

        ``SELECT ... FOR UPDATE`` on MariaDB and PostgreSQL; SQLite ignores the
        clause, and its write transaction (``BEGIN IMMEDIATE``) already keeps
        every other writer out. Raises :class:`PartitionNotFoundError` if the
        feed has no such partition.
        """
        p = self.tables.partitions
        row = conn.execute(
            select(*columns).where(p.c.feed == feed, p.c.id == partition).with_for_update()
        ).first()
        if row is None:
            raise partition_not_found(feed, partition)
        return row

    # -- history ----------------------------------------------------------

    def write_history(
        self,
        conn: Connection,
        feed: str,
        events: Sequence[HistoryEvent],
        *,
        at: datetime,
        owner: str | None = None,
        partition_pk: int | None = None,
    ) -> None:
        """Write history rows: every row of feedwatch's history goes through here.

        Each event gets the feed and the time ``at``; ``owner`` and
        ``partition_pk`` are the defaults of events that do not name their
        own. The hot paths (claims, results) hand :meth:`insert_history`
        their rows as tuples directly.
        """
        self.insert_history(
            conn,
            feed,
            [
                (e.get("partition_pk", partition_pk), e.get("item_pk"), e["event"], e.get("from_version"),
                 e.get("from_status"), e.get("to_status"), e.get("gate"), e.get("attempt"),
                 e.get("owner", owner), e.get("message"))
                for e in events
            ],
            at=at,
        )  # fmt: skip

    def insert_history(
        self, conn: Connection, feed: str, rows: Sequence[HistoryTuple], *, at: datetime
    ) -> None:
        """Insert history rows given in column order (:data:`HistoryTuple`), in the order given.

        PostgreSQL gets one array per column (``unnest``), MariaDB multi-row
        INSERTs of up to 500 rows with the values written in
        (:class:`~feedwatch.store.dialects.MysqlLiterals`: the feed and the time
        rendered once per call), SQLite the driver's executemany.
        """
        if not rows:
            return
        name, columns = self.tables.history.name, ", ".join(_HISTORY_COLUMNS)
        if self.dialect == "postgresql":
            arrays = ", ".join(
                f"CAST(:{c} AS {t}[])" for c, t in _HISTORY_TYPES.items() if c not in ("feed", "at")
            )
            statement = self.positional(
                f"INSERT INTO {name} ({columns}) SELECT :feed, u.*, :at FROM unnest({arrays}) AS u"
            )
            arrays_of = dict(
                zip(_HISTORY_ROW_COLUMNS, map(dialects.pg_array, zip(*rows, strict=True)), strict=True)
            )
            self.run(conn, statement, {"feed": feed, "at": at, **arrays_of})
            return
        stamp = self.ts(at)
        if self.dialect == "sqlite":
            marks = ", ".join("?" for _ in _HISTORY_COLUMNS)
            conn.exec_driver_sql(
                f"INSERT INTO {name} ({columns}) VALUES ({marks})", [(feed, *row, stamp) for row in rows]
            )
            return
        literal = dialects.MysqlLiterals(conn)
        shared_feed, shared_at = literal(feed), literal(at)
        for start in range(0, len(rows), 500):
            values = ", ".join(
                f"({shared_feed}, {', '.join(map(literal, row))}, {shared_at})"
                for row in rows[start : start + 500]
            )
            conn.exec_driver_sql(dialects.driver_text(f"INSERT INTO {name} ({columns}) VALUES {values}"))

    # -- multi-row writes -------------------------------------------------

    def write_rows(
        self,
        conn: Connection,
        table: Table,
        *,
        assignments: Sequence[tuple[str, str]],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        casts: dict[str, str],
        params: dict[str, Any],
        token: str,
    ) -> set[int]:
        """One UPDATE of many rows, each joined on (pk, version); returns the pks it won.

        Each row gets ``token``. The UPDATE returns the keys it changed (SQLite
        and PostgreSQL); on MariaDB, which has no ``UPDATE ... RETURNING``,
        reading the token back says exactly which rows it changed (a row count
        alone would not). The token also settles a COMMIT whose outcome was lost
        with the connection (:meth:`read_token`).
        """
        won: set[int] = set()
        if not rows:
            return won
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            if self.dialect == "mysql":
                literal = dialects.MysqlLiterals(conn)
                assign = literal.substitute(
                    self._assignments(table.name, tuple(assignments)), {**params, "token": token}
                )
                source = literal.select_rows(columns, chunk)
                join = _JOIN.format(name=table.name)
                update = dialects.update_from(
                    "mysql", table.name, assignments=assign, source=source, join=join
                )
                conn.exec_driver_sql(dialects.driver_text(update))
                won |= self.read_token(conn, table, [r[0] for r in chunk], token)  # no UPDATE ... RETURNING
            else:
                sql = self._update_sql(
                    table.name, tuple(assignments), tuple(columns), len(chunk), tuple(casts.items())
                )
                raw = self._raw_rows(chunk) if self.dialect == "sqlite" else chunk
                bound = dialects.bind_rows(self.dialect, columns, raw)
                won.update(pk for (pk,) in self.run(conn, sql, {**bound, **params, "token": token}))
        return won

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one store per process; keys are small
    def _update_sql(
        self,
        name: str,
        assignments: tuple[tuple[str, str], ...],
        columns: tuple[str, ...],
        count: int,
        casts: tuple[tuple[str, str], ...],
    ) -> Positional:
        """The multi-row UPDATE for ``count`` rows, built once per shape; it returns the keys it wrote
        (SQLite and PostgreSQL: ``RETURNING``, so no read of the token is needed to know them)."""
        source = dialects.rows_source(self.dialect, columns, count, dict(casts))
        update = dialects.update_from(
            self.dialect,
            name,
            assignments=self._assignments(name, assignments),
            source=source,
            join=_JOIN.format(name=name),
        )
        return self.positional(f"{update} RETURNING {name}.pk")

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one store per process; keys are small
    def _assignments(self, name: str, assignments: tuple[tuple[str, str], ...]) -> str:
        """The SET list of a multi-row UPDATE: the caller's, then the version bump and the token."""
        sets = [*assignments, ("version", f"{name}.version + 1"), ("token", ":token")]
        return ", ".join(f"{name}.{c} = {e}" if self.dialect == "mysql" else f"{c} = {e}" for c, e in sets)

    # -- driver-level statements ----------------------------------------------

    @functools.lru_cache(maxsize=512)  # noqa: B019 - one store per process; keys are small
    def positional(self, named_sql: str) -> Positional:
        """``:name`` markers turned into the driver's own placeholders, in order.

        The hot path's statements carry hundreds of parameters; handing them to
        the driver directly skips SQLAlchemy's per-execution parameter processing.
        """
        mark = "?" if self.dialect == "sqlite" else "%s"
        names: list[str] = []

        def swap(match: re.Match[str]) -> str:
            names.append(match.group(1))
            return mark

        return Positional(dialects.NAMED.sub(swap, named_sql), tuple(names))

    def run(self, conn: Connection, statement: Positional, params: dict[str, Any]) -> Any:
        """Execute a :class:`Positional` statement with ``params`` (timestamps pre-rendered)."""
        return conn.exec_driver_sql(statement.sql, tuple(params[n] for n in statement.names))

    def read_token(self, conn: Connection, table: Table, pks: Sequence[int], token: str) -> set[int]:
        """The rows among ``pks`` that carry ``token``: exactly those a write won."""
        if self.dialect == "mysql":  # keys written in (ints), the token a literal
            keys = ", ".join(str(int(pk)) for pk in pks)
            found = conn.exec_driver_sql(
                dialects.driver_text(
                    f"SELECT pk FROM {table.name} WHERE token = {dialects.MysqlLiterals(conn)(token)} "
                    f"AND pk IN ({keys})"
                )
            )
            return {row[0] for row in found}
        if self.dialect == "postgresql":  # one array: the same statement for every batch
            statement = self.positional(
                f"SELECT pk FROM {table.name} WHERE token = :token AND pk = ANY(CAST(:pks AS BIGINT[]))"
            )
            return {
                row[0] for row in self.run(conn, statement, {"token": token, "pks": dialects.pg_array(pks)})
            }
        statement = self.positional(
            f"SELECT pk FROM {table.name} WHERE token = :token AND pk IN ("
            + ", ".join(f":k{n}" for n in range(len(pks)))
            + ")"
        )
        params: dict[str, Any] = {f"k{n}": pk for n, pk in enumerate(pks)}
        params["token"] = token
        return {row[0] for row in self.run(conn, statement, params)}

    def _raw_rows(self, rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
        """Rows with their timestamps in SQLite's text form (the other drivers take datetimes).

        Each distinct time is formatted once: the rows of a batch mostly share theirs.
        """
        texts: dict[datetime, Any] = {}

        def text(value: Any) -> Any:
            if not isinstance(value, datetime):
                return value
            found = texts.get(value)
            if found is None:
                found = texts[value] = self.ts(value)
            return found

        return [[text(value) for value in row] for row in rows]


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", error)
    return str(orig).splitlines()[0] if str(orig) else type(orig).__name__
