"""The store suite: run unchanged on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from feedwatch import (
    ConflictError,
    DatabaseUnavailableError,
    DatabaseURLError,
    Feed,
    GateError,
    PayloadError,
    SchemaMismatchError,
    Store,
)
from feedwatch.store.records import CheckpointDecision, Claimed, ItemOutcome, ItemRow, LeaseRow, PartitionRow

pytestmark = pytest.mark.store


def _ids(rows: Sequence[ItemRow | PartitionRow]) -> list[str]:
    return [r.id for r in rows]


def test_enqueue_is_idempotent_for_the_same_payload(feed: Feed) -> None:
    first = feed.enqueue("p", {"a": {"x": 1}, "b": {"x": 2}})
    again = feed.enqueue("p", {"a": {"x": 1}, "b": {"x": 2}})
    assert (first.added, first.created_partition) == (2, True)
    assert (again.added, again.unchanged, again.created_partition) == (0, 2, False)
    assert len(feed.items("p")) == 2


def test_reenqueue_with_another_payload_names_the_id_and_writes_nothing(feed: Feed) -> None:
    feed.enqueue("p", {"a": 1})
    with pytest.raises(ConflictError, match="'a'"):
        feed.enqueue("p", {"new": 5, "a": 2})
    assert _ids(feed.items("p")) == ["a"], "the new item of the refused batch was not written"


def test_enqueue_below_the_partition_gate_is_refused_with_the_gate_named(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1}, gate=3)
    with pytest.raises(GateError, match="gate 3"):
        feed.enqueue("p", {"b": 1}, gate=1)
    assert _ids(feed.items("p")) == ["a"]
    assert feed.enqueue("p", {"c": 1}).gate == 3, "enqueue defaults to the partition's gate"


def test_data_that_is_not_json_serialisable_is_refused_naming_the_item(feed: Feed) -> None:
    with pytest.raises(PayloadError, match="'bad'"):
        feed.enqueue("p", {"good": 1, "bad": object()})
    with pytest.raises(Exception, match="does not exist"):
        feed.partition("p")


def test_payload_over_the_size_limit_is_refused(feed: Feed) -> None:
    feed.update(max_item_bytes=100)
    with pytest.raises(PayloadError, match="over the feed's limit of 100 bytes"):
        feed.enqueue("p", {"big": b"x" * 101})


def test_bytes_keep_their_content_type_and_json_is_the_default(feed: Feed) -> None:
    feed.enqueue("p", {"raw": b"\x00\x01"}, content_type="application/x-raw")
    feed.enqueue("p", {"doc": {"k": [1, 2]}})
    rows = {r.id: r for r in feed.items("p")}
    assert (rows["raw"].data, rows["raw"].content_type) == (b"\x00\x01", "application/x-raw")
    assert (rows["doc"].data, rows["doc"].content_type) == (b'{"k":[1,2]}', "application/json")


def test_items_are_read_back_oldest_first_paginated_and_filtered(feed: Feed) -> None:
    feed.enqueue("p", {f"i{n:03}": n for n in range(25)})
    feed.enqueue("p", {"later": 1}, gate=2)
    page = feed.items("p", gate=0, limit=10)
    rest = feed.items("p", gate=0, after=page[-1].pk, limit=100)
    assert _ids(page) + _ids(rest) == [f"i{n:03}" for n in range(25)]
    assert _ids(feed.items("p", gate=2)) == ["later"]
    assert len(list(feed.iter_items("p", page=7))) == 26
    assert feed.items("p", status="complete") == []


def _acquire(store: Store, feed: Feed, owner: str, now: datetime, seconds: float = 30) -> list[LeaseRow]:
    until = now + timedelta(seconds=seconds)
    return store.acquire_leases(feed.name, owner, now=now, until=until, limit=10, history=True)


def _claim(
    store: Store, feed: Feed, owner: str, lease: LeaseRow, now: datetime, *, suspects: bool = False
) -> tuple[list[Claimed], int] | None:
    """What ``owner`` claims at gate 0 under ``lease``; None if it no longer holds the partition."""
    return store.claim_items(
        feed.name, owner, lease.pk, epoch=lease.lease_epoch, gate=0, now=now, limit=10,
        max_unanswered=3, history=True, suspects=suspects,
    )  # fmt: skip


def _claimed(
    store: Store, feed: Feed, owner: str, lease: LeaseRow, now: datetime, *, suspects: bool = False
) -> list[Claimed]:
    got = _claim(store, feed, owner, lease, now, suspects=suspects)
    assert got is not None, f"{owner} still holds the partition"
    return got[0]


def test_a_claim_records_the_attempt_and_a_stale_result_loses(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1, "b": 2})
    now = store.now()
    [lease] = _acquire(store, feed, "w1", now)
    got = _claim(store, feed, "w1", lease, now)
    assert got is not None
    claimed, dead = got
    assert dead == 0 and [c.attempt for c in claimed] == [1, 1]
    a, b = claimed
    done = [_complete(lease.pk, a), _complete(lease.pk, b)]
    stale = ItemOutcome(**{**done[1].__dict__, "version": b.version - 1})
    won = store.commit_results(feed.name, "w1", [done[0], stale], now=store.now(), history=True).won
    assert won == {a.pk}, "the batch knows exactly which row it won"
    assert {r.id: r.status for r in feed.items("p")} == {"a": "complete", "b": "available"}
    again = store.commit_results(feed.name, "w1", [done[0]], now=store.now(), history=True).won
    assert again == set(), "a completion is committed once"


def _complete(partition_pk: int, claimed: Claimed) -> ItemOutcome:
    return ItemOutcome(
        pk=claimed.pk, partition_pk=partition_pk, version=claimed.version, kind="complete",
        status="complete", gate=claimed.gate, next_attempt_at=datetime(2020, 1, 1),
        failures=0, polls=0, attempt=claimed.attempt,
    )  # fmt: skip


def test_the_owner_skips_its_in_flight_items_and_a_new_owner_reclaims_them(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1})
    now = store.now()
    [lease] = _acquire(store, feed, "w1", now)
    first = _claimed(store, feed, "w1", lease, now)
    second = _claimed(store, feed, "w1", lease, now)
    assert len(first) == 1 and second == []
    # w1's lease expires; w2 takes it over and may claim the unanswered item.
    later = store.now() + timedelta(seconds=31)
    [taken] = _acquire(store, feed, "w2", later)
    assert taken.lease_epoch == lease.lease_epoch + 1
    busy = _claimed(store, feed, "w2", taken, later)
    assert busy == [], "a suspect (in flight when its watcher died) is not claimed with others"
    reclaimed = _claimed(store, feed, "w2", taken, later, suspects=True)
    assert [(c.attempt, c.suspect) for c in reclaimed] == [(2, True)]
    assert _claim(store, feed, "w1", lease, later) is None


def test_a_takeover_is_fenced_by_the_lease_it_read(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1})
    now = store.now()
    assert len(_acquire(store, feed, "w1", now, seconds=1)) == 1
    assert _acquire(store, feed, "w2", now) == []
    later = now + timedelta(seconds=2)
    assert len(_acquire(store, feed, "w2", later)) == 1
    assert store.renew_leases(feed.name, "w1", until=later + timedelta(seconds=30)) == []
    assert len(store.renew_leases(feed.name, "w2", until=later + timedelta(seconds=30))) == 1


def test_enqueue_never_costs_the_owner_its_lease(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1})
    now = store.now()
    [lease] = _acquire(store, feed, "w1", now)
    for n in range(5):
        feed.enqueue("p", {f"more{n}": n})
    [renewed] = store.renew_leases(feed.name, "w1", until=now + timedelta(seconds=60))
    assert (renewed.pk, renewed.lease_epoch) == (lease.pk, lease.lease_epoch)


def test_a_checkpoint_decided_before_an_enqueue_loses_and_is_taken_again(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1})
    now = store.now()
    [lease] = _acquire(store, feed, "w1", now)
    p = store.tables.partitions
    with store.engine.begin() as conn:  # as if a producer committed between read and write
        conn.execute(update(p).where(p.c.pk == lease.pk).values(version=p.c.version + 1))
    with store.engine.begin() as conn:
        decisions = store._write_decisions(
            conn, feed.name, "w1", {lease.pk: 0}, {lease.pk: CheckpointDecision("completed", 0)},
            now=now, history=False,
        )  # fmt: skip
    assert decisions[lease.pk].action == "lost"


def test_redrive_resets_failed_items_reopens_the_partition_and_is_idempotent(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"a": 1, "b": 2})
    i, p = store.tables.items, store.tables.partitions
    pk = feed.partition("p").pk
    with store.engine.begin() as conn:
        conn.execute(
            update(i)
            .where(i.c.partition_pk == pk, i.c.id == "a")
            .values(status="failed", error="boom", attempts=4)
        )
        conn.execute(
            update(p).where(p.c.pk == pk).values(status="failed", owner="w1", error="item 'a' failed")
        )
    assert feed.retry("p") == 1
    assert feed.retry("p") == 0
    part = feed.partition("p")
    assert (part.status, part.owner, part.error) == ("available", None, None)
    a = next(r for r in feed.items("p") if r.id == "a")
    assert (a.status, a.attempts) == ("available", 0)
    assert [h.event for h in feed.history("p") if h.item_pk == a.pk] == ["redriven"]


def test_summary_counts_per_status_and_gate_with_failed_errors(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1, "b": 2})
    feed.enqueue("p", {"c": 3}, gate=1)
    i, pk = store.tables.items, feed.partition("p").pk
    with store.engine.begin() as conn:
        conn.execute(
            update(i).where(i.c.id == "b", i.c.partition_pk == pk).values(status="failed", error="nope")
        )
    summary = feed.status("p")
    assert summary.counts == {("available", 0): 1, ("failed", 0): 1, ("available", 1): 1}
    assert summary.failed == [("b", 0, "nope")]


def test_moving_the_gate_by_hand_refuses_to_strand_available_items(feed: Feed) -> None:
    feed.enqueue("p", {"a": 1})
    feed.enqueue("p", {"b": 1}, gate=2)
    with pytest.raises(GateError, match="1 available item"):
        feed.set_gate("p", 2)
    assert feed.partition("p").gate == 0


def test_cancel_then_delete_and_purge(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1})
    feed.enqueue("q", {"b": 1})
    assert feed.cancel("p") == 1
    assert feed.partition("p").status == "failed"
    assert feed.delete("p") == 1
    p = store.tables.partitions
    with store.engine.begin() as conn:
        conn.execute(
            update(p)
            .where(p.c.feed == feed.name)
            .values(status="complete", updated_at=store.now() - timedelta(days=2))
        )
    assert feed.purge(timedelta(days=1))[0] == 1
    with store.engine.connect() as conn:
        assert conn.execute(select(p.c.pk).where(p.c.feed == feed.name)).all() == []


def test_an_unknown_url_scheme_is_refused_with_the_supported_ones_named() -> None:
    with pytest.raises(DatabaseURLError, match="mysql\\+pymysql://"):
        Store.open("oracle://scott:tiger@db/x")
    with pytest.raises(DatabaseURLError, match="use mysql\\+pymysql"):
        Store.open("mysql://u:p@127.0.0.1/x")


def test_an_unreachable_database_says_where_without_the_password() -> None:
    with pytest.raises(DatabaseUnavailableError, match="cannot reach") as info:
        Store.open("mysql+pymysql://u:hunter2@127.0.0.1:1/x")
    assert "hunter2" not in str(info.value)


def test_a_schema_older_or_newer_than_the_code_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from feedwatch import migrate

    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(SchemaMismatchError, match="no feedwatch schema"):
        Store.open(url)
    migrate(url)
    Store.open(url)
    with Store.open(url).engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(SchemaMismatchError, match="newer than this feedwatch knows"):
        Store.open(url)


def test_migrations_are_idempotent_and_support_a_table_prefix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from feedwatch import migrate

    url = f"sqlite:///{tmp_path / 'p.db'}"
    prefix = f"x{uuid.uuid4().hex[:4]}_"
    migrate(url, prefix=prefix)
    migrate(url, prefix=prefix)
    store = Store.open(url, prefix=prefix)
    Feed.create(store, "f").enqueue("p", {"a": 1})
    now = store.now()
    until = now + timedelta(seconds=30)
    [acquired] = store.acquire_leases("f", "w1", now=now, until=until, limit=5, history=True)
    # Renewals name the prefixed owner index to SQLite (INDEXED BY): the name must exist.
    assert [r.pk for r in store.renew_leases("f", "w1", until=until)] == [acquired.pk]
    with store.engine.connect() as conn:
        tables = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")}
    assert f"{prefix}items" in tables and "items" not in tables


@pytest.mark.parametrize("server", ["mariadb", "postgresql"])
def test_a_pooled_connection_killed_by_the_server_is_replaced_without_an_error(
    server: str, sqlite_url: str
) -> None:
    from sqlalchemy import text

    from tests.conftest import database_url

    url = database_url(server, sqlite_url)
    store = Store.open(url, pool_size=1)
    own_id = "SELECT CONNECTION_ID()" if server == "mariadb" else "SELECT pg_backend_pid()"
    kill = "KILL {}" if server == "mariadb" else "SELECT pg_terminate_backend({})"
    try:
        victim = store.transaction(lambda c: c.execute(text(own_id)).scalar())
        killer = Store.open(url, pool_size=1)
        assert victim is not None
        killer.transaction(lambda c: c.execute(text(kill.format(int(victim)))))
        killer.close()
        after = store.transaction(lambda c: c.execute(text(own_id)).scalar())
        assert after != victim, "a fresh connection replaced the killed one"
    finally:
        store.close()
