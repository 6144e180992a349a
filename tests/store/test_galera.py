"""Galera specifics: a URL of several nodes, causal reads, and migrations that race across nodes.

They run on the cluster of ``hack/databases up`` (collected by default and
when ``FEEDWATCH_TEST_DATABASES`` selects ``galera``); the store suite itself
runs on the cluster through the ``db_url`` fixture when ``galera`` is selected.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pymysql
import pytest
from sqlalchemy import make_url, text

from feedwatch import DatabaseURLError, Feed, Store
from feedwatch.operator.database import Databases, identity, probe, resolve_url
from feedwatch.operator.problems import ProblemError
from feedwatch.store import connect
from feedwatch.store.connection import WSREP_SYNC_WAIT
from feedwatch.store.migrating import head_revision
from tests.conftest import GALERA_URL, database_url
from tests.support.ports import free_port
from tests.support.processes import ROOT, watcher_env

pytestmark = pytest.mark.store

NODES = [(make_url(GALERA_URL).host, make_url(GALERA_URL).port)] + [
    (h.rpartition(":")[0], int(h.rpartition(":")[2])) for h in make_url(GALERA_URL).query["host"]
]


def node_url(index: int, database: str = "feedwatch") -> str:
    host, port = NODES[index]
    return f"mysql+pymysql://feedwatch:feedwatch@{host}:{port}/{database}"


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A database created for this test on the cluster, dropped after it."""
    name = f"g{uuid.uuid4().hex[:10]}"
    host, port = NODES[0]
    admin = pymysql.connect(host=host, port=port, user="feedwatch", password="feedwatch", autocommit=True)
    try:
        admin.cursor().execute(f"CREATE DATABASE {name}")
        yield name
        admin.cursor().execute(f"DROP DATABASE {name}")
    finally:
        admin.close()


def test_connections_spread_over_every_node_with_causal_reads() -> None:
    engine = connect(GALERA_URL, pool_size=6)
    try:
        conns = [engine.connect() for _ in range(6)]
        seen = [c.execute(text("SELECT @@port, @@wsrep_sync_wait")).one() for c in conns]
        for c in conns:
            c.close()
    finally:
        engine.dispose()
    assert {port for port, _ in seen} == {port for _, port in NODES}, seen
    assert {wait for _, wait in seen} == {WSREP_SYNC_WAIT}


def test_a_node_that_does_not_answer_is_passed_over() -> None:
    host, port = NODES[1]
    dead = free_port()
    url = f"mysql+pymysql://feedwatch:feedwatch@127.0.0.1:{dead}/feedwatch?host={host}:{port}"
    engine = connect(url, pool_size=4)
    try:
        conns = [engine.connect() for _ in range(4)]
        ports = {c.execute(text("SELECT @@port")).scalar() for c in conns}
        for c in conns:
            c.close()
    finally:
        engine.dispose()
    assert ports == {port}


def test_no_reachable_node_is_a_clear_error() -> None:
    url = (
        f"mysql+pymysql://feedwatch:feedwatch@127.0.0.1:{free_port()}/feedwatch?host=127.0.0.1:{free_port()}"
    )
    with pytest.raises(Exception, match="no node of the cluster is usable"):
        Store.open(url).now()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql+pymysql://u:p@a:3306/db?host=b:port", "host=name:port"),
        ("mysql+pymysql://u:p@a:3306/db?host=a:3306", "listed twice"),
        ("postgresql+psycopg://u:p@a/db?host=b:5432", "MariaDB only"),
    ],
)
def test_bad_node_lists_are_refused_with_the_fix(url: str, message: str) -> None:
    with pytest.raises(DatabaseURLError, match=message):
        connect(url)


def test_a_write_on_one_node_is_read_at_once_on_the_others(feed_name: str) -> None:
    """wsrep_sync_wait: without it a read right after a commit elsewhere may miss it."""
    database_url("galera", "sqlite://")  # migrated
    stores = [Store.open(node_url(i)) for i in range(3)]
    try:
        feeds = [Feed.create(stores[0], feed_name)] + [Feed(s, feed_name) for s in stores[1:]]
        for n in range(60):
            feeds[n % 3].enqueue("p", {f"i{n}": n})
            assert len(feeds[(n + 1) % 3].items("p", limit=1000)) == n + 1
    finally:
        for store in stores:
            store.close()


def test_three_migrations_at_once_on_three_nodes_make_one_schema(empty_database: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "feedwatch", "migrate", "--db", node_url(i, empty_database)],
            cwd=ROOT,
            env=watcher_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert sum("applied" in o for o in outputs) == 1, outputs
    for i in range(3):
        engine = connect(node_url(i, empty_database))
        try:
            with engine.connect() as conn:
                versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
                tables = set(conn.execute(text("SHOW TABLES")).scalars())
        finally:
            engine.dispose()
        assert versions == [head_revision()]
        assert {"feeds", "items", "partitions", "history", "heartbeats"} <= tables


def test_the_operator_prepares_a_feed_through_a_later_node_when_the_first_is_down(feed_name: str) -> None:
    """The operator's probe and store take the same node list as the watchers."""
    host, port = NODES[1]
    url = resolve_url(
        f"mysql+pymysql://feedwatch:feedwatch@127.0.0.1:{free_port()}/feedwatch?host={host}:{port}".encode(),
        secret="db",
        key="url",
    )
    target = identity(url, prefix="", feed=feed_name)
    probe(target, timeout=2)  # the first node is down: the second answers
    databases = Databases(workers=1)
    try:
        asyncio.run(
            databases.prepare(url, target=target, migrate_schema=True, feed_settings={"max_retries": 7})
        )
    finally:
        databases.close()
    assert Feed(database_url("galera", "sqlite://"), feed_name).settings.max_retries == 7


def test_the_operator_refuses_an_unusable_node_list_naming_the_secret() -> None:
    with pytest.raises(ProblemError, match=r"Secret 'db', key 'url'.*host=name:port") as caught:
        resolve_url(b"mysql+pymysql://u:secret@a:3306/db?host=b:port", secret="db", key="url")
    assert "secret" not in str(caught.value)
