"""The store's shared machinery: tables, transactions, database time."""

from __future__ import annotations

import functools
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Table, TextClause, bindparam, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from feedwatch.errors import DatabaseUnavailableError
from feedwatch.store import dialects, schema
from feedwatch.store.connection import redact, statements

T = TypeVar("T")
log = logging.getLogger("feedwatch.store")

#: Errors and messages kept on rows are cut to this many characters.
MESSAGE_LIMIT = 2000


def bounded(message: str | None) -> str | None:
    """A message cut to :data:`MESSAGE_LIMIT` characters."""
    if message is None or len(message) <= MESSAGE_LIMIT:
        return message
    return message[: MESSAGE_LIMIT - 20] + " ...[truncated]"


def new_token() -> str:
    return uuid.uuid4().hex


class StoreBase:
    """Holds the engine and the tables; runs transactions with retries."""

    def __init__(self, engine: Engine, *, prefix: str = "") -> None:
        self.engine = engine
        self.dialect = dialects.name(engine)
        self.tables = schema.build(prefix)
        self.prefix = prefix
        self.url = redact(engine.url.render_as_string(hide_password=False))

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

        ``readonly`` transactions do not take SQLite's write lock.
        """
        stale_retried = False
        for attempt in range(1, attempts + 1):
            statements.seen = False
            try:
                with self.engine.connect() as conn:
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
                if dialects.is_transient(error) and attempt < attempts:
                    log.debug("transaction retried after %s", type(error.orig).__name__)
                    time.sleep(random.uniform(0.005, 0.05) * attempt)  # noqa: S311
                    continue
                if dialects.is_disconnect(error):
                    raise DatabaseUnavailableError(
                        f"cannot reach the database at {self.url}: {_first_line(error)}"
                    ) from error
                raise
        raise AssertionError("unreachable")

    # -- multi-row writes -------------------------------------------------

    def write_rows(
        self,
        conn: Connection,
        table: Table,
        assignments: Sequence[tuple[str, str]],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        casts: dict[str, str],
        params: dict[str, Any],
        token: str,
    ) -> set[int]:
        """One UPDATE of many rows, each joined on (pk, version); returns the pks it won.

        Each row gets ``token``; reading the token back says exactly which rows
        this statement changed (a row count alone would not).
        """
        won: set[int] = set()
        if not rows:
            return won
        for start in range(0, len(rows), 1000):
            chunk = rows[start : start + 1000]
            sql = self._update_sql(
                table.name, tuple(assignments), tuple(columns), len(chunk), tuple(casts.items())
            )
            bound = dialects.bind_rows(columns, [self._raw_row(r) for r in chunk])
            conn.execute(sql, {**bound, **params, "token": token})
            won |= self.read_token(conn, table, [r[0] for r in chunk], token)
        return won

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one store per process; keys are small
    def _update_sql(
        self,
        name: str,
        assignments: tuple[tuple[str, str], ...],
        columns: tuple[str, ...],
        count: int,
        casts: tuple[tuple[str, str], ...],
    ) -> TextClause:
        """The multi-row UPDATE for ``count`` rows, built and parsed once per shape."""
        sets = [*assignments, ("version", f"{name}.version + 1"), ("token", ":token")]
        assign = ", ".join(f"{name}.{c} = {e}" if self.dialect == "mysql" else f"{c} = {e}" for c, e in sets)
        source = dialects.rows_source(self.dialect, columns, count, dict(casts))
        return text(
            dialects.update_from(
                self.dialect, name, assign, source, f"{name}.pk = v.pk AND {name}.version = v.version"
            )
        )

    def read_token(self, conn: Connection, table: Table, pks: Iterable[int], token: str) -> set[int]:
        query = select(table.c.pk).where(
            table.c.pk.in_(bindparam("pks", expanding=True)), table.c.token == token
        )
        return {row[0] for row in conn.execute(query, {"pks": list(pks)})}

    def _raw_row(self, row: Sequence[Any]) -> list[Any]:
        return [self.ts(v) if isinstance(v, datetime) else v for v in row]


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", error)
    return str(orig).splitlines()[0] if str(orig) else type(orig).__name__
