"""The backlog query (what the autoscaler reads), on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import make_url, update

from feedwatch import Feed, Store
from feedwatch.operator.backlog import BacklogReader, BacklogReadError
from feedwatch.operator.scaler import Autoscaler, ScaleResult
from feedwatch.operator.specs import FeedWatcherSpec
from tests.conftest import database_url

pytestmark = pytest.mark.store


def test_an_empty_feed_has_no_backlog(feed: Feed, store: Store) -> None:
    backlog = store.feed_backlog(feed.name, limit=100)
    assert (backlog.partitions, backlog.items, backlog.leased, backlog.oldest_item_age_seconds) == (
        0, 0, 0, 0.0,
    )  # fmt: skip
    assert not backlog.paused


def test_due_partitions_and_their_items_at_the_gate_are_counted(feed: Feed, store: Store) -> None:
    feed.enqueue("a", {"1": 1, "2": 2})
    feed.enqueue("b", {"1": 1})
    feed.enqueue("b", {"later": 1}, gate=3)  # waits for gate 3: not backlog yet
    backlog = store.feed_backlog(feed.name, limit=100)
    assert (backlog.partitions, backlog.items) == (2, 3)


def test_delayed_idle_and_closed_partitions_are_not_backlog(feed: Feed, store: Store) -> None:
    now = store.now()
    feed.enqueue("due", {"1": 1})
    feed.enqueue("delayed", {"1": 1}, not_before=now + timedelta(hours=1))
    feed.enqueue("idle", {"1": 1})
    feed.enqueue("closed", {"1": 1})
    p = store.tables.partitions
    store.transaction(
        lambda c: c.execute(update(p).where(p.c.feed == feed.name, p.c.id == "idle").values(ready_at=None))
    )
    feed.cancel("closed")
    backlog = store.feed_backlog(feed.name, limit=100)
    assert (backlog.partitions, backlog.items) == (1, 1)


def test_an_item_waiting_for_a_retry_is_not_counted(feed: Feed, store: Store) -> None:
    now = store.now()
    feed.enqueue("p", {"now": 1, "soon": 2})
    i = store.tables.items
    store.transaction(
        lambda c: c.execute(
            update(i).where(i.c.id == "soon").values(next_attempt_at=now + timedelta(minutes=5))
        )
    )
    backlog = store.feed_backlog(feed.name, limit=100)
    assert (backlog.partitions, backlog.items) == (1, 1)


def test_counts_stop_at_the_limit(feed: Feed, store: Store) -> None:
    for n in range(6):
        feed.enqueue(f"p{n}", {f"i{k}": k for k in range(4)})
    backlog = store.feed_backlog(feed.name, limit=5)
    assert (backlog.partitions, backlog.items, backlog.limit) == (5, 5, 5)
    full = store.feed_backlog(feed.name, limit=1000)
    assert (full.partitions, full.items) == (6, 24)


def test_leased_partitions_are_counted_and_still_backlog(feed: Feed, store: Store) -> None:
    feed.enqueue("a", {"1": 1})
    feed.enqueue("b", {"1": 1})
    now = store.now()
    store.acquire_leases(feed.name, "w1", now=now, until=now + timedelta(seconds=30), limit=1, history=False)
    backlog = store.feed_backlog(feed.name, limit=100)
    assert (backlog.partitions, backlog.leased) == (2, 1)
    expired = store.feed_backlog(feed.name, limit=100, now=now + timedelta(seconds=31))
    assert expired.leased == 0, "an expired lease holds nothing"


def test_the_oldest_item_age_is_that_of_the_oldest_due_item(feed: Feed, store: Store) -> None:
    feed.enqueue("a", {"1": 1})
    feed.enqueue("b", {"1": 1})
    created = min(item.created_at for name in ("a", "b") for item in feed.items(name))
    at = store.now() + timedelta(seconds=100)
    backlog = store.feed_backlog(feed.name, limit=100, now=at)
    assert backlog.oldest_item_age_seconds == pytest.approx((at - created).total_seconds(), abs=0.01)
    assert backlog.read_at == at


def test_a_paused_feed_has_no_backlog(feed: Feed, store: Store) -> None:
    feed.enqueue("a", {"1": 1})
    feed.pause()
    backlog = store.feed_backlog(feed.name, limit=100)
    assert backlog.paused and (backlog.partitions, backlog.items) == (0, 0)
    feed.resume()
    assert store.feed_backlog(feed.name, limit=100).partitions == 1


def test_a_limit_below_one_is_refused(store: Store, feed: Feed) -> None:
    with pytest.raises(ValueError, match="limit must be at least 1"):
        store.feed_backlog(feed.name, limit=0)


# -- the operator's reader: few connections, bounded waits ----------------------------


@pytest.fixture(params=["mariadb", "postgresql"])
def server_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    return database_url(request.param, sqlite_url)


def test_fifty_feeds_read_at_once_hold_at_most_two_connections(server_url: str) -> None:
    store = Store.open(server_url)
    names = [f"t{uuid.uuid4().hex[:12]}" for _ in range(50)]
    try:
        for name in names:
            Feed.create(store, name).enqueue("p", {"1": 1})
    finally:
        store.close()
    reader = BacklogReader()

    async def read_all() -> list[int]:
        backlogs = await asyncio.gather(*(reader.read(server_url, feed=n, limit=100) for n in names))
        return [b.partitions for b in backlogs]

    try:
        assert asyncio.run(read_all()) == [1] * 50
        assert 1 <= reader.connections() <= 2
    finally:
        reader.close()


def test_each_connection_carries_a_statement_timeout(server_url: str) -> None:
    reader = BacklogReader(statement_timeout=2.5)
    try:
        engine = reader.store(server_url).engine
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "2500ms"
            else:
                assert float(conn.exec_driver_sql("SELECT @@max_statement_time").scalar_one()) == 2.5
    finally:
        reader.close()


def test_an_unreachable_database_fails_the_read_quickly_without_the_password(server_url: str) -> None:
    # Port 1: nothing listens there (PostgreSQL here trusts loopback, so a wrong password would pass).
    wrong = make_url(server_url).set(password="not-the-password-s3cret", port=1)
    url = wrong.render_as_string(hide_password=False)
    reader = BacklogReader(timeout=5)
    started = time.monotonic()
    try:
        with pytest.raises(BacklogReadError) as caught:
            asyncio.run(reader.read(url, feed="any", limit=10))
    finally:
        reader.close()
    assert time.monotonic() - started < 5
    assert "s3cret" not in str(caught.value) and "cannot read the backlog" in str(caught.value)


# -- the Autoscaler over a real database: what it writes, and when ---------------------


def _spec(feed: str, **autoscaling: object) -> FeedWatcherSpec:
    return FeedWatcherSpec.from_object(
        {
            "metadata": {"name": "fw", "namespace": "ns"},
            "spec": {
                "feed": feed,
                "database": {"urlSecretRef": {"name": "db"}},
                "handler": {"url": "http://handler.invalid/"},
                "autoscaling": {"maxReplicaCount": 5, "targetBacklogPerReplica": 2, **autoscaling},
            },
        }
    )


def _evaluate(
    scaler: Autoscaler, spec: FeedWatcherSpec, status: dict[str, Any], current: int, url: str, *, at: datetime
) -> ScaleResult:
    result = asyncio.run(
        scaler.evaluate(spec=spec, status=status, current_replicas=current, database_url=url, now=at)
    )
    status.update(result.status_patch)  # as the operator's status patch would
    return result


def test_the_autoscaler_writes_status_backlog_on_decisions_and_at_most_once_a_minute(
    server_url: str,
) -> None:
    store = Store.open(server_url)
    feed = Feed.create(store, f"t{uuid.uuid4().hex[:12]}")
    reader = BacklogReader()
    scaler = Autoscaler(backlogs=reader, registry=CollectorRegistry())
    spec = _spec(feed.name)
    status: dict[str, Any] = {}
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        for n in range(4):
            feed.enqueue(f"p{n}", {"i": n})
        first = _evaluate(scaler, spec, status, 1, server_url, at=t0)
        assert first.replicas == 2 and first.events == [
            ("Normal", "Scaled", "scaled 1 -> 2: backlog 4 partitions, target 2")
        ]
        assert first.status_patch["backlog"]["partitions"] == 4
        assert first.status_patch["desiredReplicas"] == 2
        assert first.condition[:2] == ("True", "BacklogRead")
        same = _evaluate(scaler, spec, status, 2, server_url, at=t0 + timedelta(seconds=1))
        assert same.status_patch == {} and same.events == [], "nothing changed: nothing to write"
        feed.pause()  # the backlog is 0 now
        paused = _evaluate(scaler, spec, status, 2, server_url, at=t0 + timedelta(seconds=2))
        assert paused.replicas == 2, "scale-down waits for the window"
        assert "backlog" not in paused.status_patch, "counts changed, but the last write is recent"
        later = _evaluate(scaler, spec, status, 2, server_url, at=t0 + timedelta(seconds=61))
        assert later.status_patch["backlog"]["partitions"] == 0, "a minute later the new counts are written"
    finally:
        reader.close()
        store.close()


def test_the_autoscaler_warns_once_per_problem_and_says_when_it_recovers(server_url: str) -> None:
    store = Store.open(server_url)
    feed = Feed.create(store, f"t{uuid.uuid4().hex[:12]}")
    store.close()
    wrong = make_url(server_url).set(port=1).render_as_string(hide_password=False)
    reader = BacklogReader(timeout=5)
    scaler = Autoscaler(backlogs=reader, registry=CollectorRegistry())
    spec = _spec(feed.name, fallback={"failureThreshold": 2, "replicas": 4})
    status: dict[str, Any] = {}
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        one = _evaluate(scaler, spec, status, 3, wrong, at=t0)
        two = _evaluate(scaler, spec, status, 3, wrong, at=t0 + timedelta(seconds=1))
        three = _evaluate(scaler, spec, status, 4, wrong, at=t0 + timedelta(seconds=2))
        assert (one.replicas, one.condition[1]) == (3, "BacklogReadFailed")
        assert [e[1] for e in one.events] == ["BacklogReadFailed"]
        assert (two.replicas, two.condition[1]) == (4, "FallbackApplied")
        assert [e[1] for e in two.events] == ["FallbackApplied", "Scaled"]
        assert three.events == [], "the same problem is not posted again"
        back = _evaluate(scaler, spec, status, 4, server_url, at=t0 + timedelta(seconds=3))
        assert back.condition[1] == "BacklogRead" and ("Normal", "Recovered") in [e[:2] for e in back.events]
    finally:
        reader.close()


def test_a_restarted_autoscaler_neither_scales_down_within_a_window_nor_shortens_the_cooldown(
    server_url: str,
) -> None:
    store = Store.open(server_url)
    feed = Feed.create(store, f"t{uuid.uuid4().hex[:12]}")
    store.close()
    reader = BacklogReader()
    spec = _spec(feed.name, cooldownPeriod=100, behavior={"scaleDown": {"stabilizationWindowSeconds": 30}})
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    # What the previous operator left: active at its last write, lastActiveTime long ago.
    status: dict[str, Any] = {
        "backlog": {"partitions": 6, "items": 6, "readTime": "2025-12-31T23:59:00Z"},
        "lastActiveTime": "2025-12-31T00:00:00Z",
        "desiredReplicas": 3,
    }
    try:
        scaler = Autoscaler(backlogs=reader, registry=CollectorRegistry())  # the restarted operator
        held = _evaluate(scaler, spec, status, 3, server_url, at=t0)
        assert held.replicas == 3, "no scale-down within one window of the restart"
        assert status["lastActiveTime"] == "2026-01-01T00:00:00Z", "the cooldown counts from the restart"
        down = _evaluate(scaler, spec, status, 3, server_url, at=t0 + timedelta(seconds=31))
        assert down.replicas == 1, "after the window: down, but the cooldown is not over"
        zero = _evaluate(scaler, spec, status, 1, server_url, at=t0 + timedelta(seconds=100))
        assert zero.replicas == 0
    finally:
        reader.close()
