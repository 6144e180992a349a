"""Faults of a Galera cluster: a node killed, a node cut off from the others.

They run on the three-node cluster of ``hack/databases up`` (collected by
default and when ``FEEDWATCH_TEST_DATABASES`` selects ``galera``). Every watcher's
URL lists the three nodes, so each holds connections on every node: when one
node goes, every watcher loses some connections and must carry on through the
others, within the lease plus the cluster's suspect timeout (``evs.suspect_timeout``
is 5 s in ``hack/databases``: until then the survivors' writes stall). The node
then comes back (rejoins by state transfer) and takes connections again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from sqlalchemy import func, make_url, select, text

from feedwatch import Store
from feedwatch.store import connect
from feedwatch.testing import wait_for
from tests.conftest import GALERA_URL, database_url
from tests.support.fault_checks import Expected, read, verify
from tests.support.faults import (
    Fleet,
    RecoveryLog,
    Scenario,
    WatcherProcess,
    client_ports,
    count_items,
    enqueue_workload,
    wait_drained,
)
from tests.support.processes import ROOT

pytestmark = [pytest.mark.faults, pytest.mark.slow]

LEASE = 2.0  # --lease-duration of the fault suite's watchers
SUSPECT = 5.0  # evs.suspect_timeout of hack/databases
RUN = Path(os.environ.get("FEEDWATCH_DB_RUN", "/var/tmp/feedwatch-databases")) / "galera"
_PARSED = make_url(GALERA_URL)
NODES = [(str(_PARSED.host), int(_PARSED.port or 3306))] + [
    (h.rpartition(":")[0], int(h.rpartition(":")[2])) for h in _PARSED.query["host"]
]


def admin(node: int) -> pymysql.Connection:
    host, port = NODES[node]
    return pymysql.connect(
        host=host, port=port, user="feedwatch", password="feedwatch", autocommit=True, connect_timeout=3
    )


def node_status(node: int) -> dict[str, str]:
    """The node's wsrep status (empty when it does not answer)."""
    try:
        conn = admin(node)
    except pymysql.err.OperationalError:
        return {}
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW STATUS LIKE 'wsrep_%'")
            return {str(k): str(v) for k, v in cur.fetchall()}
    finally:
        conn.close()


def primary_size(node: int) -> int:
    status = node_status(node)
    if status.get("wsrep_cluster_status") != "Primary" or status.get("wsrep_local_state_comment") != "Synced":
        return 0
    return int(status.get("wsrep_cluster_size", 0))


def node_pid(node: int) -> int:
    return int((RUN / f"node{node + 1}" / "mysqld.pid").read_text())


def clients_on(node: int) -> set[int]:
    """The client ports of the feedwatch connections open on ``node``."""
    conn = admin(node)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT HOST FROM information_schema.PROCESSLIST "
                "WHERE USER = 'feedwatch' AND ID <> CONNECTION_ID()"
            )
            hosts = [str(r[0]) for r in cur.fetchall()]
    finally:
        conn.close()
    return {int(h.rpartition(":")[2]) for h in hosts if ":" in h}


def commits_by(store: Store, feed: str, watcher: WatcherProcess) -> int:
    """History rows written by ``watcher`` (owner ids carry its PID)."""
    h = store.tables.history
    query = select(func.count()).where(h.c.feed == feed, h.c.owner.like(f"%-{watcher.pid}-%"))
    return int(read(store, lambda conn: conn.execute(query).scalar()) or 0)


@pytest.fixture
def cluster() -> Iterator[None]:
    """The whole cluster up and synced before and after the test (a node it took down restarts)."""
    database_url("galera", "sqlite://")  # migrated
    wait_for(lambda: primary_size(0) == 3, timeout=60, message="the three Galera nodes to be synced")
    try:
        yield
    finally:
        for node in range(3):
            with contextlib.suppress(OSError, pymysql.err.Error):
                conn = admin(node)
                with conn.cursor() as cur:
                    cur.execute("SET GLOBAL wsrep_provider_options = 'gmcast.isolate=0'")
                conn.close()
        with contextlib.suppress(OSError, ValueError):
            os.kill(node_pid(1), signal.SIGCONT)
        subprocess.run([str(ROOT / "hack" / "databases"), "up", "galera"], check=True, timeout=300)
        wait_for(
            lambda: all(primary_size(n) == 3 for n in range(3)),
            timeout=120,
            message="the cluster to be whole again",
        )


def start_fleet(scenario: Scenario, feed_name: str, handler_url: str) -> Fleet:
    fleet = Fleet(scenario.workdir, GALERA_URL, feed_name, handler_url)
    scenario.fleets.append(fleet)
    fleet.start(3)
    return fleet


def wait_every_watcher_commits(store: Store, feed: str, fleet: Fleet, since: float, timeout: float) -> float:
    """Seconds from ``since`` until every watcher has committed again; fails after ``timeout``."""
    before = {w.name: commits_by(store, feed, w) for w in fleet.watchers}
    wait_for(
        lambda: all(commits_by(store, feed, w) > before[w.name] for w in fleet.watchers),
        timeout=timeout,
        message="every watcher to commit again through the surviving nodes",
        interval=0.1,
    )
    return time.monotonic() - since


def test_a_node_killed_mid_run_its_watchers_carry_on_through_the_others(
    scenario: Scenario, cluster: None, recovery: RecoveryLog
) -> None:
    victim = 1
    handler = scenario.handler(last_gate=2, delay=0.05)
    feed = scenario.feed(GALERA_URL)
    store = feed.store
    expected = Expected()
    enqueue_workload(feed, expected, partitions=6, items=60, last_gate=2)
    fleet = start_fleet(scenario, feed.name, handler.url)
    wait_for(lambda: count_items(store, feed.name) > 40, timeout=60, message="some progress")
    on_victim = clients_on(victim)
    using = [w for w in fleet.watchers if client_ports(w.pid) & on_victim]
    assert using, "no watcher had a connection on the node about to die: connections do not spread"

    os.kill(node_pid(victim), signal.SIGKILL)
    killed = time.monotonic()
    assert not node_status(victim), "the killed node still answers"
    store.engine.dispose()  # the test's own pool: its connections to the dead node are gone
    took = wait_every_watcher_commits(store, feed.name, fleet, killed, 60)
    recovery.record(
        "galera: one node of three SIGKILLed", "kill -> every watcher committed again", took,
        f"({len(using)} watcher(s) had connections on it)",
    )  # fmt: skip
    assert took < LEASE + SUSPECT + 5, f"watchers took {took:.1f} s to move to the surviving nodes"
    assert all(w.alive() for w in fleet.watchers), [w.tail() for w in fleet.watchers if not w.alive()]
    assert primary_size(0) == 2, "the survivors did not drop the killed node"

    restarted = time.monotonic()
    subprocess.run([str(ROOT / "hack" / "databases"), "up", "galera"], check=True, timeout=300)
    wait_for(lambda: primary_size(victim) == 3, timeout=120, message="the killed node to rejoin")
    rejoined = time.monotonic() - restarted
    recovery.record("galera: the killed node restarted", "start -> synced in the cluster", rejoined)
    fresh = connect(GALERA_URL, pool_size=3)  # a new pool spreads over the rejoined node again
    try:
        conns = [fresh.connect() for _ in range(3)]
        ports = {c.execute(text("SELECT @@port")).scalar() for c in conns}
        for c in conns:
            c.close()
    finally:
        fresh.dispose()
    assert NODES[victim][1] in ports, f"no new connection went to the rejoined node: {ports}"
    wait_drained(store, feed.name, 180)
    fleet.stop_and_check()
    verify(store, feed.name, expected, handler.calls(feed.name))


def test_a_node_cut_off_alone_its_watchers_carry_on_through_the_others(
    scenario: Scenario, cluster: None, recovery: RecoveryLog
) -> None:
    """``gmcast.isolate``: the node drops its links to the others (a partition at Galera's
    level), finds itself alone and non-primary, and refuses queries (1047)."""
    victim = 2
    handler = scenario.handler(last_gate=2, delay=0.05)
    feed = scenario.feed(GALERA_URL)
    store = feed.store
    expected = Expected()
    enqueue_workload(feed, expected, partitions=6, items=60, last_gate=2)
    fleet = start_fleet(scenario, feed.name, handler.url)
    wait_for(lambda: count_items(store, feed.name) > 40, timeout=60, message="some progress")
    assert clients_on(victim), "no connection on the node about to be cut off"

    conn = admin(victim)
    with conn.cursor() as cur:
        cur.execute("SET GLOBAL wsrep_provider_options = 'gmcast.isolate=1'")
    cut = time.monotonic()
    wait_for(
        lambda: node_status(victim).get("wsrep_cluster_status") != "Primary",
        timeout=30,
        message="the node to be alone",
    )
    took = wait_every_watcher_commits(store, feed.name, fleet, cut, 60)
    recovery.record(
        "galera: one node cut off alone (non-primary)", "cut -> every watcher committed again", took
    )
    assert took < LEASE + SUSPECT + 5, f"watchers took {took:.1f} s to move to the primary component"

    with conn.cursor() as cur:
        cur.execute("SET GLOBAL wsrep_provider_options = 'gmcast.isolate=0'")
    conn.close()
    wait_for(lambda: primary_size(victim) == 3, timeout=120, message="the node to rejoin")
    wait_drained(store, feed.name, 180)
    fleet.stop_and_check()
    verify(store, feed.name, expected, handler.calls(feed.name))
