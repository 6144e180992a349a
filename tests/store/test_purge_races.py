"""Purge against a concurrent enqueue: acknowledged work is never lost (issue 10, finding 3).

Each race is made deterministic with the database's own locks: a hook on
one side's connection stops it at the racy moment (purge right after its
SELECT of the complete partitions; the enqueue right after it reopened the
partition, before its COMMIT), runs the other side in a thread of its own,
and lets the first go on only once the second has finished or is seen
waiting on a lock (``pg_stat_activity``, ``information_schema.innodb_trx``;
on SQLite, waiting for the one writer's lock at feedwatch's write gate). Before
the fix, purge deleted by key what it had selected without a lock, and on
MariaDB and PostgreSQL either order lost the enqueued items.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, text, update

from feedwatch import Feed, Store
from feedwatch.store.enqueueing import EnqueueResult
from feedwatch.store.writegate import WriteGate
from feedwatch.testing import wait_for
from tests.conftest import ALL_DATABASES, database_url

pytestmark = pytest.mark.store


@pytest.fixture(params=[d for d in ALL_DATABASES if d != "galera"])
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """Every database but Galera, whose row locks hold on one node only.

    These races are staged by watching one session wait on another's row lock,
    which a Galera cluster does not do across nodes: there the conflict surfaces
    at commit (certification, error 1213) and the losing transaction is retried
    with its version re-read. Purge itself runs on Galera in test_store.py; the
    race is not staged there.
    """
    return database_url(request.param, sqlite_url)


class Session:
    """A store with one connection, whose lock waits the test can see from another connection."""

    def __init__(self, url: str, observer: Store) -> None:
        self.store = Store.open(url, pool_size=1)
        self.observer = observer
        self.dialect = self.store.dialect
        self.began = threading.Event()
        event.listen(self.store.engine, "before_cursor_execute", self._sent)
        if self.store.write_gate is not None:  # SQLite: a writer waits first at feedwatch's gate
            self.store.write_gate = AnnouncingGate(self.store.write_gate, self.began)
        # Also opens the one connection now: SQLite's connection set-up would wait for the writer.
        own_id = {"mysql": "SELECT CONNECTION_ID()", "postgresql": "SELECT pg_backend_pid()"}
        self.backend = self.store.transaction(
            lambda c: c.execute(text(own_id.get(self.dialect, "SELECT 1"))).scalar()
        )
        self.began.clear()

    def _sent(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("BEGIN IMMEDIATE"):  # SQLite: a writer waits here for the lock
            self.began.set()

    def waiting(self) -> bool:
        """Whether this session is waiting on a lock held by another transaction."""
        if self.dialect == "sqlite":
            return self.began.is_set()  # the writer's lock is held: it waits at the gate
        query = {
            # InnoDB reports a row lock wait as LOCK WAIT, but not always: a FOR UPDATE
            # by unique key reads its row in the optimizer, which then just sits in
            # "Statistics". A statement of ours running for half a second is blocked.
            "mysql": "SELECT (SELECT COUNT(*) FROM information_schema.innodb_trx "
            "WHERE trx_mysql_thread_id = :id AND trx_state = 'LOCK WAIT') + "
            "(SELECT COUNT(*) FROM information_schema.processlist "
            "WHERE id = :id AND command = 'Query' AND time_ms >= 500)",
            "postgresql": "SELECT COUNT(*) FROM pg_stat_activity "
            "WHERE pid = :id AND wait_event_type = 'Lock'",
        }[self.dialect]
        return bool(
            self.observer.transaction(
                lambda c: c.execute(text(query), {"id": self.backend}).scalar(), readonly=True
            )
        )

    def pause_after(self, matches: Callable[[str], bool], meanwhile: Callable[[], None]) -> None:
        """After the first statement for which ``matches(sql)``, run ``meanwhile`` before going on."""
        fired = threading.Event()

        def hook(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if not fired.is_set() and matches(statement):
                fired.set()
                meanwhile()

        event.listen(self.store.engine, "after_cursor_execute", hook)

    def close(self) -> None:
        self.store.close()


class AnnouncingGate(WriteGate):
    """A SQLite session's write gate that says when its writer starts to wait there."""

    def __init__(self, gate: WriteGate, began: threading.Event) -> None:
        self.gate = gate
        self.began = began

    def held(self) -> AbstractContextManager[None]:
        self.began.set()
        return self.gate.held()


class Racer(threading.Thread):
    """The other side of the race: one call in a thread, its result or error kept."""

    def __init__(self, session: Session, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.session = session
        self.call = call
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as error:  # handed to the test's thread
            self.error = error

    def go_until_done_or_blocked(self) -> None:
        self.session.began.clear()
        self.start()
        wait_for(
            lambda: not self.is_alive() or self.session.waiting(),
            timeout=30,
            interval=0.01,
            message="the racing transaction to finish or wait on a lock",
        )

    def outcome(self) -> Any:
        self.join(30)
        assert not self.is_alive(), "the racing call never finished"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def sessions(db_url: str, store: Store) -> Iterator[tuple[Session, Session]]:
    """Two single-connection sessions: the purger's and the producer's."""
    purger, producer = Session(db_url, store), Session(db_url, store)
    try:
        yield purger, producer
    finally:
        purger.close()
        producer.close()


def complete_partition(store: Store, feed: str, partition: str) -> None:
    """Close a partition as complete (as a watcher would have), so that purge may take it."""
    p, i = store.tables.partitions, store.tables.items
    pk = store.partition(feed, partition).pk
    with store.engine.begin() as conn:
        conn.execute(update(i).where(i.c.partition_pk == pk).values(status="complete"))
        conn.execute(update(p).where(p.c.pk == pk).values(status="complete", ready_at=None))


def _purge_select(sql: str) -> bool:
    return sql.lstrip().upper().startswith("SELECT") and "partitions" in sql


def _reopening_update(sql: str) -> bool:
    return sql.lstrip().upper().startswith("UPDATE") and "partitions" in sql


def test_an_enqueue_arriving_while_purge_runs_is_kept_as_a_new_partition(
    feed: Feed, store: Store, sessions: tuple[Session, Session]
) -> None:
    purger, producer = sessions
    feed.enqueue("p", {"old": 1})
    complete_partition(store, feed.name, "p")
    before = store.now() + timedelta(seconds=1)
    their_feed = Feed(producer.store, feed.name)
    racer = Racer(producer, lambda: their_feed.enqueue("p", {"new": 2}))
    purger.pause_after(_purge_select, racer.go_until_done_or_blocked)

    removed, _ = purger.store.purge(feed.name, before, partitions=True, history=True)
    result: EnqueueResult = racer.outcome()

    assert removed == 1, "the old complete partition was purged"
    assert result.created_partition and result.added == 1, "the enqueue waited, then created it anew"
    assert [(r.id, r.status) for r in feed.items("p")] == [("new", "available")]
    assert feed.partition("p").status == "available"


def test_a_partition_reopened_by_an_enqueue_in_flight_is_not_purged(
    feed: Feed, store: Store, sessions: tuple[Session, Session]
) -> None:
    purger, producer = sessions
    feed.enqueue("p", {"old": 1})
    complete_partition(store, feed.name, "p")
    before = store.now() + timedelta(seconds=1)
    racer = Racer(purger, lambda: purger.store.purge(feed.name, before, partitions=True, history=True))
    producer.pause_after(_reopening_update, racer.go_until_done_or_blocked)

    result = Feed(producer.store, feed.name).enqueue("p", {"new": 2})
    removed, _ = racer.outcome()

    assert result.reopened, "the enqueue reopened the complete partition"
    assert removed == 0, "purge saw the partition open again and left it"
    assert {r.id: r.status for r in feed.items("p")} == {"old": "complete", "new": "available"}
    assert feed.partition("p").status == "available"


def test_purge_takes_only_complete_partitions_older_than_the_cutoff(feed: Feed, store: Store) -> None:
    for name in ("done", "open", "recent"):
        feed.enqueue(name, {"a": 1})
    complete_partition(store, feed.name, "done")
    cutoff = store.now() + timedelta(seconds=1)
    wait_for(lambda: store.now() > cutoff, timeout=5, interval=0.05, message="the cutoff to pass")
    complete_partition(store, feed.name, "recent")
    p = store.tables.partitions
    with store.engine.begin() as conn:  # "recent" was completed after the cutoff
        conn.execute(
            update(p).where(p.c.feed == feed.name, p.c.id == "recent").values(updated_at=store.now())
        )
    removed, _ = store.purge(feed.name, cutoff, partitions=True, history=False)
    assert removed == 1
    assert sorted(r.id for r in feed.partitions()) == ["open", "recent"]
