"""Scenario 3: what the database itself does on this machine, through its Python driver.

A scratch table shaped like ``items`` (primary key, version, status, token, an
index on (group, status, pk)) with 20,000 rows. Through the raw DBAPI
connection (no SQLAlchemy), each shape runs for a fixed time, one statement a
transaction, as the engine commits:

- multi-row UPDATE of 500 rows per statement, each row fenced by its own
  primary key and version, in every shape the dialect allows (the fastest is
  the database's limit); every statement must change exactly 500 rows;
- indexed range SELECT of 500 rows (the claim's read) and point SELECT by key;
- the smallest transaction (BEGIN, SELECT 1, COMMIT), raw and through
  SQLAlchemy Core as the store runs it: the engine's transactions per
  item-gate times this cost bound its rate.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from bench.harness import Database

ROWS = 20_000
BATCH = 500
GROUP = 1000


@dataclass
class Shape:
    name: str
    kind: str  # "update", "select", "transaction"
    rate: float  # rows/s (update, range select) or statements/s
    unit: str


def _ddl(dialect: str, table: str) -> list[str]:
    pk = "INTEGER PRIMARY KEY" if dialect == "sqlite" else "BIGINT PRIMARY KEY"
    blob = {"sqlite": "BLOB", "mariadb": "LONGBLOB", "postgresql": "BYTEA"}[dialect]
    suffix = " ENGINE=InnoDB" if dialect == "mariadb" else ""
    return [
        f"CREATE TABLE {table} (pk {pk}, grp INTEGER NOT NULL, status VARCHAR(16) NOT NULL, "
        f"version INTEGER NOT NULL, token VARCHAR(32), data {blob}){suffix}",
        f"CREATE INDEX {table}_ix ON {table} (grp, status, pk)",
    ]


class Scratch:
    """The scratch table and a raw driver connection to it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.dialect = db.name
        self.table = f"bench_scratch_{uuid.uuid4().hex[:8]}"
        self.ph = "?" if db.name == "sqlite" else "%s"
        self.raw: Any = db.store.engine.raw_connection()
        self.versions = [0] * ROWS
        cur = self.raw.cursor()
        for sql in _ddl(db.name, self.table):
            cur.execute(sql)
        self.commit()
        rows = [(pk, pk // GROUP, "available", 0, None, b'{"n":1}') for pk in range(ROWS)]
        self.begin()
        cur.executemany(
            f"INSERT INTO {self.table} (pk, grp, status, version, token, data) VALUES "
            f"({', '.join([self.ph] * 6)})",
            rows,
        )
        self.commit()
        if db.name == "postgresql":
            cur.execute(f"ANALYZE {self.table}")
            self.commit()
        cur.close()

    def begin(self) -> None:
        if self.dialect == "sqlite":
            self.raw.cursor().execute("BEGIN")

    def commit(self) -> None:
        if self.dialect == "sqlite":
            self.raw.cursor().execute("COMMIT") if self.raw.in_transaction else None
        else:
            self.raw.commit()

    def drop(self) -> None:
        cur = self.raw.cursor()
        try:
            cur.execute(f"DROP TABLE {self.table}")
            self.commit()
        finally:
            cur.close()
            self.raw.close()

    # -- UPDATE shapes: (sql, params) for a batch of (pk, version, status) --------------

    def shapes(self) -> dict[str, Callable[[list[tuple[int, int, str]], str], tuple[str, Any, bool]]]:
        t, ph, d = self.table, self.ph, self.dialect
        n = BATCH

        def executemany(rows: list[tuple[int, int, str]], token: str) -> tuple[str, Any, bool]:
            sql = (
                f"UPDATE {t} SET status = {ph}, version = version + 1, token = {ph} "
                f"WHERE pk = {ph} AND version = {ph}"
            )
            return sql, [(s, token, pk, v) for pk, v, s in rows], True

        def case(rows: list[tuple[int, int, str]], token: str) -> tuple[str, Any, bool]:
            whens = " ".join([f"WHEN {ph} THEN {ph}"] * n)
            pairs = ", ".join([f"({ph}, {ph})"] * n)
            sql = (
                f"UPDATE {t} SET status = CASE pk {whens} END, version = version + 1, token = {ph} "
                f"WHERE (pk, version) IN ({pairs})"
            )
            params = [x for pk, _, s in rows for x in (pk, s)] + [token]
            params += [x for pk, v, _ in rows for x in (pk, v)]
            return sql, params, False

        def values_join(rows: list[tuple[int, int, str]], token: str) -> tuple[str, Any, bool]:
            if d == "sqlite":
                values = ", ".join([f"({ph}, {ph}, {ph})"] * n)
                renamed = "column1 AS pk, column2 AS version, column3 AS status"
                source = f"(SELECT {renamed} FROM (VALUES {values})) AS v"
            else:
                values = ", ".join([f"({ph}::bigint, {ph}::int, {ph}::varchar)"] * n)
                source = f"(VALUES {values}) AS v(pk, version, status)"
            sql = (
                f"UPDATE {t} SET status = v.status, version = {t}.version + 1, token = {ph} "
                f"FROM {source} WHERE {t}.pk = v.pk AND {t}.version = v.version"
            )
            return sql, [token] + [x for r in rows for x in r], False

        def union_join(rows: list[tuple[int, int, str]], token: str) -> tuple[str, Any, bool]:
            selects = [f"SELECT {ph} AS pk, {ph} AS version, {ph} AS status"]
            selects += [f"SELECT {ph}, {ph}, {ph}"] * (n - 1)
            sql = (
                f"UPDATE {t} JOIN ({' UNION ALL '.join(selects)}) AS v "
                f"ON {t}.pk = v.pk AND {t}.version = v.version "
                f"SET {t}.status = v.status, {t}.version = {t}.version + 1, {t}.token = {ph}"
            )
            return sql, [x for r in rows for x in r] + [token], False

        def json_table(rows: list[tuple[int, int, str]], token: str) -> tuple[str, Any, bool]:
            import json

            sql = (
                f"UPDATE {t} JOIN JSON_TABLE({ph}, '$[*]' COLUMNS (pk BIGINT PATH '$[0]', "
                f"version INT PATH '$[1]', status VARCHAR(16) PATH '$[2]')) AS v "
                f"ON {t}.pk = v.pk AND {t}.version = v.version "
                f"SET {t}.status = v.status, {t}.version = {t}.version + 1, {t}.token = {ph}"
            )
            return sql, [json.dumps(rows), token], False

        def unnest(rows: list[tuple[int, int, str]], token: str) -> tuple[str, Any, bool]:
            sql = (
                f"UPDATE {t} SET status = v.status, version = {t}.version + 1, token = %s "
                f"FROM unnest(%s::bigint[], %s::int[], %s::varchar[]) AS v(pk, version, status) "
                f"WHERE {t}.pk = v.pk AND {t}.version = v.version"
            )
            return sql, [token, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]], False

        out: dict[str, Callable[[list[tuple[int, int, str]], str], tuple[str, Any, bool]]] = {
            "executemany UPDATE ... WHERE pk AND version": executemany
        }
        out["UPDATE ... SET CASE ... WHERE (pk, version) IN"] = case
        if d in ("sqlite", "postgresql"):
            out["UPDATE ... FROM (VALUES ...) joined on pk, version"] = values_join
        if d == "mariadb":
            out["UPDATE ... JOIN (SELECT ... UNION ALL ...) on pk, version"] = union_join
            out["UPDATE ... JOIN JSON_TABLE(one JSON parameter) on pk, version"] = json_table
        if d == "postgresql":
            out["UPDATE ... FROM unnest(arrays) on pk, version"] = unnest
        return out

    def time_update(self, build: Callable[..., tuple[str, Any, bool]], duration: float) -> float:
        cur = self.raw.cursor()
        done = 0
        batches = ROWS // BATCH
        started = time.perf_counter()
        k = 0
        while time.perf_counter() - started < duration or done == 0:
            lo = (k % batches) * BATCH
            k += 1
            rows = [(pk, self.versions[pk], "available") for pk in range(lo, lo + BATCH)]
            sql, params, many = build(rows, uuid.uuid4().hex)
            self.begin()
            if many:
                cur.executemany(sql, params)
                changed = cur.rowcount
            else:
                cur.execute(sql, params)
                changed = cur.rowcount
            self.commit()
            if changed not in (BATCH, -1):
                raise AssertionError(f"an UPDATE changed {changed} rows, not {BATCH}")
            for pk in range(lo, lo + BATCH):
                self.versions[pk] += 1
            done += BATCH
        elapsed = time.perf_counter() - started
        cur.close()
        return done / elapsed

    def time_select(self, duration: float, *, point: bool) -> float:
        cur = self.raw.cursor()
        ph, t = self.ph, self.table
        if point:
            sql = f"SELECT pk, version, status FROM {t} WHERE pk = {ph}"
        else:
            sql = (
                f"SELECT pk, version, status, data FROM {t} WHERE grp = {ph} AND status = {ph} "
                f"ORDER BY pk LIMIT {BATCH}"
            )
        count = 0
        k = 0
        started = time.perf_counter()
        while time.perf_counter() - started < duration or count == 0:
            k += 1
            if point:
                cur.execute(sql, ((k * 7919) % ROWS,))
                count += len(cur.fetchall())
            else:
                cur.execute(sql, (k % (ROWS // GROUP), "available"))
                rows = cur.fetchall()
                if len(rows) != BATCH:
                    raise AssertionError(f"the range SELECT returned {len(rows)} rows")
                count += len(rows)
            if self.dialect != "sqlite":
                self.raw.commit()
        elapsed = time.perf_counter() - started
        cur.close()
        return count / elapsed

    def store_like_update(self) -> Any:
        """The joined UPDATE as the store sends it: SQLAlchemy ``text()`` with named parameters."""
        t, d, n = self.table, self.dialect, BATCH
        if d == "mariadb":
            selects = ["SELECT :pk_0 AS pk, :version_0 AS version, :status_0 AS status"]
            selects += [f"SELECT :pk_{i}, :version_{i}, :status_{i}" for i in range(1, n)]
            sql = (
                f"UPDATE {t} JOIN ({' UNION ALL '.join(selects)}) AS v "
                f"ON {t}.pk = v.pk AND {t}.version = v.version "
                f"SET {t}.status = v.status, {t}.version = {t}.version + 1, {t}.token = :token"
            )
        else:
            if d == "sqlite":
                values = ", ".join(f"(:pk_{i}, :version_{i}, :status_{i})" for i in range(n))
                source = (
                    "(SELECT column1 AS pk, column2 AS version, column3 AS status "
                    f"FROM (VALUES {values})) AS v"
                )
            else:
                values = ", ".join(
                    f"(CAST(:pk_{i} AS BIGINT), CAST(:version_{i} AS INTEGER), CAST(:status_{i} AS VARCHAR))"
                    for i in range(n)
                )
                source = f"(VALUES {values}) AS v(pk, version, status)"
            sql = (
                f"UPDATE {t} SET status = v.status, version = {t}.version + 1, token = :token "
                f"FROM {source} WHERE {t}.pk = v.pk AND {t}.version = v.version"
            )
        return text(sql)

    def time_update_sqlalchemy(self, duration: float) -> float:
        statement = self.store_like_update()
        engine = self.db.store.engine
        done = 0
        batches = ROWS // BATCH
        k = 0
        started = time.perf_counter()
        while time.perf_counter() - started < duration or done == 0:
            lo = (k % batches) * BATCH
            k += 1
            params: dict[str, Any] = {"token": uuid.uuid4().hex}
            for i, pk in enumerate(range(lo, lo + BATCH)):
                params[f"pk_{i}"] = pk
                params[f"version_{i}"] = self.versions[pk]
                params[f"status_{i}"] = "available"
            with engine.begin() as conn:
                changed = conn.execute(statement, params).rowcount
            if changed != BATCH:
                raise AssertionError(f"an UPDATE changed {changed} rows, not {BATCH}")
            for pk in range(lo, lo + BATCH):
                self.versions[pk] += 1
            done += BATCH
        return done / (time.perf_counter() - started)

    def time_transactions(self, duration: float, *, orm: bool) -> float:
        count = 0
        started = time.perf_counter()
        if orm:
            engine = self.db.store.engine
            query = text("SELECT 1")
            while time.perf_counter() - started < duration or count == 0:
                with engine.begin() as conn:
                    conn.execute(query).scalar()
                count += 1
        else:
            cur = self.raw.cursor()
            while time.perf_counter() - started < duration or count == 0:
                self.begin()
                cur.execute("SELECT 1")
                cur.fetchall()
                self.commit()
                count += 1
            cur.close()
        return count / (time.perf_counter() - started)


def measure(db: Database, duration: float) -> list[Shape]:
    scratch = Scratch(db)
    out: list[Shape] = []
    try:
        for name, build in scratch.shapes().items():
            out.append(Shape(name, "update", scratch.time_update(build, duration), "rows/s"))
        out.append(
            Shape(
                "the joined UPDATE via SQLAlchemy text(), named parameters (the store before 8b95457)",
                "update-sa",
                scratch.time_update_sqlalchemy(duration),
                "rows/s",
            )
        )
        out.append(
            Shape(
                f"indexed range SELECT, {BATCH} rows",
                "select",
                scratch.time_select(duration, point=False),
                "rows/s",
            )
        )
        out.append(
            Shape(
                "point SELECT by primary key", "point", scratch.time_select(duration, point=True), "queries/s"
            )
        )
        out.append(
            Shape(
                "transaction BEGIN; SELECT 1; COMMIT (raw driver)",
                "transaction",
                scratch.time_transactions(duration, orm=False),
                "transactions/s",
            )
        )
        out.append(
            Shape(
                "the same through SQLAlchemy Core (as the store)",
                "transaction-sa",
                scratch.time_transactions(duration, orm=True),
                "transactions/s",
            )
        )
    finally:
        scratch.drop()
    return out
