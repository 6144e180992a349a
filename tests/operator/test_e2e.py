"""End to end: the operator's Deployment really runs, and processes a workload.

The operator (a subprocess) turns a FeedWatcher on MariaDB into a
Deployment; kwok schedules its pods and marks them Running; the process node
(tests/support/process_node.py) runs each pod's container as a local
``feedwatch watch`` process with the env a kubelet would give it (the
database URL from the Secret by ``secretKeyRef``); the watchers call a real
HTTP handler process. Nothing here talks to the watchers directly: the
FeedWatcher is the only input.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

import pytest

from feedwatch import Feed, Store
from feedwatch.testing import assert_invariants
from tests.service.helpers import history
from tests.support.handler import Handler
from tests.support.kube_operator import (  # noqa: F401 - fixtures
    MARIADB_URL,
    OperatorProcess,
    crd,
    create_database_secret,
    create_feedwatcher,
    feedwatcher,
    operator_namespace,
    read_deployment,
    shared_operator,
    wait_for_condition,
)
from tests.support.kubernetes import KubeEnv
from tests.support.process_node import ProcessNode
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.kubernetes, pytest.mark.slow]

PARTITIONS, ITEMS = 10, 20
POD_LABEL = "feedwatch.dev/feedwatcher"


def fast_watcher(name: str, feed: str, handler: Handler, **spec: Any) -> dict[str, Any]:
    """A FeedWatcher on MariaDB with short leases and polls, and quick feed retries."""
    return feedwatcher(
        name,
        feed=feed,
        handler={"url": handler.url, "timeoutSeconds": 10},
        watcher={
            "pollIntervalSeconds": 0.2,
            "leaseDurationSeconds": 5,
            "gracePeriodSeconds": 5,
            "logFormat": "text",
        },
        feedSettings={"backoffBase": 0.05, "backoffCap": 0.2, "pollDelay": 0.05},
        **spec,
    )


def feed_name() -> str:
    return f"e2e{uuid.uuid4().hex[:10]}"


def test_a_feedwatcher_on_mariadb_processes_a_fan_out_fan_in_workload_to_completion(  # noqa: PLR0917 - pytest passes fixtures by name
    kube: KubeEnv,
    operator_namespace: str,  # noqa: F811
    shared_operator: OperatorProcess,  # noqa: F811
    node: ProcessNode,
    handler: Handler,
    store: Store,
) -> None:
    ns, name, feed = operator_namespace, "resumes", feed_name()
    create_database_secret(kube, ns)
    create_feedwatcher(kube, ns, fast_watcher(name, feed, handler))
    wait_for_condition(kube, ns, name, "Ready", operator=shared_operator, timeout=90)

    (watcher,) = node.wait_for(1, {POD_LABEL: name})
    assert watcher.argv[1:4] == ["-m", "feedwatch", "watch"]  # the image's entrypoint, the checkout's code
    assert watcher.env["FEEDWATCH_DATABASE_URL"] == MARIADB_URL  # resolved from the Secret
    deployment = read_deployment(kube, ns, name)
    assert deployment is not None
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    url_env = next(e for e in container["env"] if e["name"] == "FEEDWATCH_DATABASE_URL")
    assert url_env == {
        "name": "FEEDWATCH_DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "feedwatch-db", "key": "url"}},
    }
    # The operator created the feed row and applied feedSettings.
    settings = Feed(store, feed).settings
    assert (settings.backoff_base, settings.backoff_cap, settings.poll_delay) == (0.05, 0.2, 0.05)
    wait_until(
        lambda: len(store.live_watchers(feed, store.now())) == 1,
        timeout=60,
        message=lambda: f"the watcher to heartbeat\n{node.dump()}",
    )

    producer = Feed(store, feed)
    parts = [f"p{n}" for n in range(PARTITIONS)]
    for part in parts:
        producer.enqueue(part, {f"i{n}": {"behave": "ok", "n": n} for n in range(ITEMS)})
        producer.enqueue(part, {"fan-in": {"behave": "ok"}}, gate=1)
    wait_until(
        lambda: all(producer.partition(p).status == "complete" for p in parts),
        timeout=120,
        message=lambda: f"every partition to complete\n{node.dump()}",
    )
    for part in parts:
        rows = producer.items(part)
        assert len(rows) == ITEMS + 1
        assert {row.status for row in rows} == {"complete"}
    assert_invariants(store, feed)

    # Fan-in, from the handler's side: each partition's gate-1 item was called only
    # after the handler had answered every gate-0 item of that partition.
    calls, replies = handler.records("call"), handler.records("reply")
    assert {c["feed"] for c in calls} == {feed}
    seen: dict[str, set[str]] = defaultdict(set)
    for c in calls:
        seen[c["p"]].add(c["i"])
    assert set(seen) == set(parts)
    for part in parts:
        assert len(seen[part]) == ITEMS + 1
        gate0_done = max(r["t"] for r in replies if r["p"] == part and r["g"] == 0)
        fan_in = min(c["t"] for c in calls if c["p"] == part and c["g"] == 1)
        assert fan_in > gate0_done, f"{part}: the gate-1 item started before gate 0 finished"
    assert watcher.running and watcher.restarts == 0, node.dump()


def test_scaling_the_feedwatcher_to_three_gives_three_watchers_that_share_the_partitions_and_back(  # noqa: PLR0917 - pytest passes fixtures by name
    kube: KubeEnv,
    operator_namespace: str,  # noqa: F811
    shared_operator: OperatorProcess,  # noqa: F811
    node: ProcessNode,
    handler: Handler,
    store: Store,
) -> None:
    ns, name, feed = operator_namespace, "scaled", feed_name()
    create_database_secret(kube, ns)
    create_feedwatcher(kube, ns, fast_watcher(name, feed, handler))
    wait_for_condition(kube, ns, name, "Ready", operator=shared_operator, timeout=90)
    node.wait_for(1, {POD_LABEL: name})

    kube.kubectl("scale", f"fw/{name}", "--replicas", "3", "-n", ns)
    body = wait_for_condition(kube, ns, name, "Ready", operator=shared_operator, timeout=90)
    wait_until(
        lambda: (read_deployment(kube, ns, name) or {}).get("status", {}).get("readyReplicas") == 3,
        timeout=60,
        message="3 ready replicas",
    )
    three = node.wait_for(3, {POD_LABEL: name})
    assert len({p.pid for p in three}) == 3
    assert body["spec"]["replicas"] == 3
    wait_until(
        lambda: len(store.live_watchers(feed, store.now())) == 3,
        timeout=60,
        message=lambda: f"three watchers to heartbeat\n{node.dump()}",
    )

    # Partitions busy long enough for the three to balance (each aims at 12 / 3 = 4).
    producer = Feed(store, feed)
    parts = [f"p{n}" for n in range(12)]
    for part in parts:
        producer.enqueue(part, {f"i{n}": {"behave": "ok", "delay": 0.3} for n in range(6)})
    wait_until(
        lambda: all(producer.partition(p).status == "complete" for p in parts),
        timeout=120,
        message=lambda: f"every partition to complete\n{node.dump()}",
    )
    assert_invariants(store, feed)
    owners = {row.owner for row in history(store, feed, event="complete")}
    assert len(owners) == 3, f"completions by {owners}"
    assert set(owners) <= set(store.live_watchers(feed, store.now()))
    assert all(p.running and p.restarts == 0 for p in three), node.dump()

    # Back to one: the two pods deleted get SIGTERM and their watchers stop cleanly
    # (exit 0 within the grace period, no SIGKILL), leaving one live watcher.
    kube.kubectl("scale", f"fw/{name}", "--replicas", "1", "-n", ns)
    (kept,) = node.wait_for(1, {POD_LABEL: name}, timeout=90)
    stopped = [p for p in three if p is not kept]
    assert len(stopped) == 2
    for p in stopped:
        assert (p.exit_codes, p.killed) == ([0], False), node.dump()
    wait_until(
        lambda: len(store.live_watchers(feed, store.now())) == 1,
        timeout=60,
        message=lambda: f"one live watcher after scaling down\n{node.dump()}",
    )
