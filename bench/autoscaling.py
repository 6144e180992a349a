"""Scenario 6: what the autoscaler costs: the backlog query, and the operator's connections.

- The backlog query (``Store.feed_backlog``) with a small and a large number of
  waiting items (1k and 1M at full size): its cost must not grow with the
  backlog (same order of magnitude), since every count stops at a limit.
- 50 autoscaled FeedWatchers on one database, read by one operator-side
  :class:`~feedwatch.operator.scaler.Autoscaler`: the connections it holds
  (goal <= 5) and its CPU per polling round.

Items are inserted by one ``INSERT ... SELECT`` from a row generator per
database (``generate_series``, MariaDB's ``seq_1_to_N``, a recursive CTE on
SQLite), so a million rows take seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psutil
from sqlalchemy import delete, make_url, select, text

from bench.figures import Target, fmt
from bench.harness import Database, bulk_partitions
from feedwatch.operator.backlog import BacklogReader
from feedwatch.operator.scaler import COUNT_FLOOR, Autoscaler
from feedwatch.operator.specs import FeedWatcherSpec

if TYPE_CHECKING:
    from bench.cli import Context

#: Waiting items per size: (small, large), always in 1,000 due partitions, so the
#: comparison is of the item count alone.
SIZES = {"tiny": (1000, 10_000), "quick": (1000, 100_000), "full": (1000, 1_000_000)}
PARTITIONS = 1000
WATCHERS = 50
READS = 20


@dataclass(frozen=True)
class QueryCost:
    items: int
    ms: list[float]
    setup_s: float


def fill(db: Database, feed: str, items: int) -> float:
    """``items`` due items in 1,000 due partitions; returns the seconds it took."""
    started = time.monotonic()
    per_partition = max(items // PARTITIONS, 1)
    now = db.now()
    bulk_partitions(db, feed, PARTITIONS, ready_at=now)
    t = db.store.tables
    columns = (
        "partition_pk, id, status, gate, version, data, content_type, input_hash, attempts, failures, "
        "polls, unanswered, next_attempt_at, created_at, updated_at"
    )
    values = "p.pk, {id}, 'available', 0, 0, NULL, 'application/json', 'x', 0, 0, 0, 0, :now, :now, :now"
    source = f"SELECT {values}".format(id="'i' || g.n") + f" FROM {t.partitions.name} p CROSS JOIN "
    insert = f"INSERT INTO {t.items.name} ({columns}) "
    if db.name == "postgresql":
        sql = insert + source + f"generate_series(1, {per_partition}) AS g(n) WHERE p.feed = :feed"
    elif db.name == "mariadb":
        source = (
            f"SELECT {values}".format(id="CONCAT('i', g.seq)") + f" FROM {t.partitions.name} p CROSS JOIN "
        )
        sql = insert + source + f"seq_1_to_{per_partition} g WHERE p.feed = :feed"
    else:  # SQLite: the CTE comes before the INSERT
        cte = f"WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {per_partition}) "
        sql = cte + insert + source + "g WHERE p.feed = :feed"
    # 50 partitions (up to 50,000 rows) a statement: far below the drivers' read timeout.
    p = t.partitions
    with db.store.engine.connect() as conn:
        pks = [r[0] for r in conn.execute(select(p.c.pk).where(p.c.feed == feed).order_by(p.c.pk))]
    sql += " AND p.pk BETWEEN :low AND :high"
    for start in range(0, len(pks), 50):
        chunk = pks[start : start + 50]
        with db.store.engine.begin() as conn:
            conn.execute(
                text(sql), {"now": db.store.ts(now), "feed": feed, "low": chunk[0], "high": chunk[-1]}
            )
    with db.store.engine.begin() as conn:
        if db.name == "postgresql":
            conn.execute(text(f"ANALYZE {t.items.name}"))
            conn.execute(text(f"ANALYZE {t.partitions.name}"))
    return time.monotonic() - started


def empty(db: Database, feed: str) -> None:
    """Delete the feed's items 50 partitions at a time (one DELETE of a million rows would time out)."""
    p, i = db.store.tables.partitions, db.store.tables.items
    with db.store.engine.connect() as conn:
        pks = [r[0] for r in conn.execute(select(p.c.pk).where(p.c.feed == feed).order_by(p.c.pk))]
    for start in range(0, len(pks), 50):
        with db.store.engine.begin() as conn:
            conn.execute(delete(i).where(i.c.partition_pk.in_(pks[start : start + 50])))


def query_cost(db: Database, items: int, *, limit: int) -> QueryCost:
    feed = db.new_feed(f"backlog{items}", history=False).name
    setup = fill(db, feed, items)
    first = db.store.feed_backlog(feed, limit=limit)
    assert first.items == min(items, limit), f"expected {min(items, limit)} items, read {first.items}"
    timings = []
    for _ in range(READS):
        started = time.perf_counter()
        db.store.feed_backlog(feed, limit=limit)
        timings.append((time.perf_counter() - started) * 1000)
    empty(db, feed)
    db.cleanup()
    return QueryCost(items, timings, setup)


def _spec(name: str, feed: str) -> FeedWatcherSpec:
    return FeedWatcherSpec.from_object(
        {
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {
                "feed": feed,
                "database": {"urlSecretRef": {"name": "db"}},
                "handler": {"url": "http://handler.bench.svc/"},
                "autoscaling": {"maxReplicaCount": 10, "targetBacklogPerReplica": 10},
            },
        }
    )


def _tcp_to(port: int) -> int:
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


@dataclass(frozen=True)
class OperatorCost:
    connections: int
    pooled: int
    cpu_ms_per_round: list[float]
    wall_ms_per_round: list[float]


def operator_cost(db: Database, rounds: int) -> OperatorCost:
    """One Autoscaler evaluating 50 FeedWatchers on one database, ``rounds`` polling rounds."""
    feeds = []
    for n in range(WATCHERS):
        feed = db.new_feed(f"op{n}", history=False)
        feed.enqueue("p", {"1": 1})
        feeds.append(feed.name)
    specs = [_spec(f"fw{n}", name) for n, name in enumerate(feeds)]
    port = make_url(db.url).port or 0
    before = _tcp_to(port)
    reader = BacklogReader()
    scaler = Autoscaler(backlogs=reader)
    cpu: list[float] = []
    wall: list[float] = []
    held = 0

    async def one_round() -> None:
        now = datetime.now(UTC)
        await asyncio.gather(
            *(
                scaler.evaluate(spec=s, status={}, current_replicas=1, database_url=db.url, now=now)
                for s in specs
            )
        )

    async def run() -> None:
        nonlocal held
        for _ in range(rounds):
            c0, w0 = time.process_time(), time.perf_counter()
            await one_round()
            cpu.append((time.process_time() - c0) * 1000)
            wall.append((time.perf_counter() - w0) * 1000)
            held = max(held, _tcp_to(port) - before)

    try:
        asyncio.run(run())
        pooled = reader.connections()
    finally:
        reader.close()
        db.cleanup()
    return OperatorCost(held, pooled, cpu, wall)


def scenario_6(ctx: Context, db: Database) -> None:
    small, large = SIZES[ctx.size.name]
    limit = max(10 * 10 + 1, COUNT_FLOOR)  # what the autoscaler asks for with max 10, target 10
    costs = []
    for items in (small, large):
        cost = query_cost(db, items, limit=limit)
        costs.append(cost)
        fig = ctx.figure("6", db, f"{items:,} waiting items", "backlog query", "ms")
        fig.values = [statistics.median(cost.ms)]
        print(
            f"  backlog query with {items:,} waiting items: median {fmt(statistics.median(cost.ms))} ms, "
            f"max {fmt(max(cost.ms))} ms (setup {cost.setup_s:.1f} s)",
            flush=True,
        )
    ratio = ctx.figure("6", db, f"{large:,} vs {small:,} waiting items", "backlog query ratio", "x",
                       target=Target("<=", 10, "<= 10 (same order)"))  # fmt: skip
    ratio.values = [statistics.median(costs[1].ms) / statistics.median(costs[0].ms)]
    if db.name == "sqlite":
        return  # the operator refuses SQLite: no connection figures there
    held = operator_cost(db, max(ctx.repeat, 3))
    conns = ctx.figure("6", db, f"{WATCHERS} autoscaled FeedWatchers", "operator connections", "connections",
                       target=Target("<=", 5))  # fmt: skip
    conns.values = [float(held.connections)]
    cpu = ctx.figure("6", db, f"{WATCHERS} autoscaled FeedWatchers", "operator CPU per polling round", "ms")
    cpu.values = held.cpu_ms_per_round
    print(
        f"  {WATCHERS} FeedWatchers: {held.connections} connections held ({held.pooled} pooled), "
        f"CPU {fmt(statistics.median(held.cpu_ms_per_round))} ms and wall "
        f"{fmt(statistics.median(held.wall_ms_per_round))} ms per polling round",
        flush=True,
    )
