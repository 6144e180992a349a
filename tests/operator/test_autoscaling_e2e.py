"""End to end: the autoscaler takes real watcher processes 0 -> 3 -> 0 with the work.

The operator scales the FeedWatcher's Deployment from its feed's backlog; kwok
runs the pods and the process node runs each as a local ``feedwatch watch``
process calling a real handler. The feed is the only input: the test enqueues
a fan-out/fan-in workload and watches the replicas and the processes follow.
"""

from __future__ import annotations

import urllib.request
import uuid

import pytest

from feedwatch import Feed, Store
from feedwatch.testing import assert_invariants
from tests.service.helpers import history
from tests.support.handler import Handler
from tests.support.kube_operator import (
    OperatorProcess,
    create_database_secret,
    create_feedwatcher,
    events,
    feedwatcher,
    read_deployment,
)
from tests.support.kubernetes import KubeEnv
from tests.support.process_node import PodProcess, ProcessNode
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.kubernetes, pytest.mark.slow]

POD_LABEL = "feedwatch.dev/feedwatcher"
#: With 2 handler calls at a time per watcher, one watcher alone would need ~14 s.
PARTITIONS, ITEMS = 12, 8


def watcher_metrics(process: PodProcess) -> str:
    url = f"http://127.0.0.1:{process.health_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def replicas(kube: KubeEnv, namespace: str, name: str) -> int | None:
    deployment = read_deployment(kube, namespace, name)
    return None if deployment is None else int(deployment["spec"].get("replicas", 1))


def test_watchers_scale_from_zero_to_three_drain_a_fan_out_fan_in_workload_and_return_to_zero(  # noqa: PLR0917 - pytest passes fixtures by name
    kube: KubeEnv,
    operator_namespace: str,
    shared_operator: OperatorProcess,
    node: ProcessNode,
    handler: Handler,
    store: Store,
) -> None:
    ns, name, feed = operator_namespace, "elastic", f"ase{uuid.uuid4().hex[:10]}"
    create_database_secret(kube, ns)
    create_feedwatcher(
        kube,
        ns,
        feedwatcher(
            name,
            feed=feed,
            handler={"url": handler.url, "timeoutSeconds": 10},
            watcher={
                "concurrency": 2,
                "pollIntervalSeconds": 0.2,
                "leaseDurationSeconds": 5,
                "gracePeriodSeconds": 5,
                "logFormat": "text",
            },
            feedSettings={"backoffBase": 0.05, "backoffCap": 0.2, "pollDelay": 0.05},
            autoscaling={
                "minReplicaCount": 0,
                "maxReplicaCount": 3,
                "targetBacklogPerReplica": 2,
                "pollingInterval": 1,
                "cooldownPeriod": 5,
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 3}},
            },
        ),
    )
    selector = {POD_LABEL: name}
    # An empty feed: the first watcher goes after the cooldown, and its process with it.
    wait_until(lambda: replicas(kube, ns, name) == 0, timeout=90, message=shared_operator.log_tail)
    node.wait_for(0, selector, timeout=60)

    producer = Feed(store, feed)
    parts = [f"p{n}" for n in range(PARTITIONS)]
    for part in parts:  # each item takes 0.3 s: long enough for three watchers to share them
        producer.enqueue(part, {f"i{n}": {"behave": "ok", "delay": 0.3} for n in range(ITEMS)})
        producer.enqueue(part, {"fan-in": {"behave": "ok"}}, gate=1)
    wait_until(lambda: replicas(kube, ns, name) == 3, timeout=30, message=shared_operator.log_tail)
    three = node.wait_for(3, selector, timeout=90)
    assert len({p.pid for p in three}) == 3
    # Each watcher's /metrics shows the backlog the autoscaler reads (refreshed every 5 s).
    sample = f'feedwatch_backlog_partitions{{feed="{feed}"}} '
    wait_until(
        lambda: any(line.startswith(sample) for line in watcher_metrics(three[0]).splitlines()),
        timeout=30,
        message=lambda: f"{sample} in the watcher's /metrics\n{watcher_metrics(three[0])[-2000:]}",
    )

    wait_until(
        lambda: all(producer.partition(p).status == "complete" for p in parts),
        timeout=180,
        message=lambda: f"every partition to complete\n{node.dump()}",
    )
    for part in parts:
        assert {row.status for row in producer.items(part)} == {"complete"}
        assert len(producer.items(part)) == ITEMS + 1
    assert_invariants(store, feed)
    owners = {row.owner for row in history(store, feed, event="complete")}
    assert len(owners) > 1, f"the work was done by {owners} only"

    # Drained: back to zero after the window and the cooldown, and every process stopped.
    wait_until(lambda: replicas(kube, ns, name) == 0, timeout=90, message=shared_operator.log_tail)
    node.wait_for(0, selector, timeout=60)
    stopped = [p for p in node.all(selector) if p.exit_codes]
    assert stopped and all(_stopped_cleanly(p) for p in stopped), node.dump()

    scaled = [e["message"] for e in events(kube, ns, name) if e["reason"] == "Scaled"]
    assert any(" -> 3: backlog " in m for m in scaled), scaled
    assert any(m.endswith("-> 0: idle for 5 s (cooldown) with no partition leased") for m in scaled), scaled


def _stopped_cleanly(pod: PodProcess) -> bool:
    """Exit 0, or SIGTERM before the process wrote a line (still importing: it held nothing).

    From ``feedwatch watch``'s first step a SIGTERM is a graceful stop (exit 0); only
    while the interpreter imports does it end the process (the cooldown scale-down
    can come that early on a loaded machine).
    """
    if pod.exit_codes == [0]:
        return True
    written = [line for line in pod.output().splitlines() if not line.startswith("=== process node")]
    return pod.exit_codes == [-15] and not pod.killed and not written
