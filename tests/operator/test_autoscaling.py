"""Autoscaling with the real operator, a real API server and MariaDB.

The watcher pods run on kwok's simulated node (nothing consumes the feed), so
the backlog is exactly what each test enqueues or cancels. Short windows keep
the tests quick: pollingInterval 1 s, stabilisation window and cooldown of a
few seconds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url

from feedwatch import Feed, Store
from tests.support.kube_operator import (
    MARIADB_URL,
    OperatorProcess,
    condition,
    create_database_secret,
    create_feedwatcher,
    events,
    feedwatcher,
    read_deployment,
    read_feedwatcher,
    replace_secret_data,
    wait_for_condition,
)
from tests.support.kubernetes import KubeEnv
from tests.support.waiting import wait_until

pytestmark = pytest.mark.kubernetes

POLL = 1
#: What "within one polling interval" may add: the loop's pass (<= 1 s), the apply, the watch.
MARGIN = 4.0


@pytest.fixture
def feed(store: Store) -> Feed:
    return Feed.create(store, f"as{uuid.uuid4().hex[:10]}")


def autoscaled(name: str, feed: Feed, **autoscaling: Any) -> dict[str, Any]:
    policy = {
        "minReplicaCount": 0,
        "maxReplicaCount": 3,
        "targetBacklogPerReplica": 10,
        "pollingInterval": POLL,
        "cooldownPeriod": 10,
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 4}},
        **autoscaling,
    }
    return feedwatcher(name, feed=feed.name, replicas=1, autoscaling=policy)


def replicas(kube: KubeEnv, namespace: str, name: str) -> int | None:
    deployment = read_deployment(kube, namespace, name)
    return None if deployment is None else int(deployment["spec"].get("replicas", 1))


def wait_replicas(kube: KubeEnv, namespace: str, name: str, wanted: int, operator: OperatorProcess,
                  *, timeout: float = 60) -> float:  # fmt: skip
    """Wait for the Deployment's replicas; returns when (monotonic) they were seen."""
    wait_until(
        lambda: replicas(kube, namespace, name) == wanted,
        timeout=timeout,
        interval=0.1,
        message=lambda: (
            f"Deployment {name} at {wanted} replicas (now {replicas(kube, namespace, name)})\n"
            + operator.log_tail()
        ),
    )
    return time.monotonic()


def replicas_until_zero(
    kube: KubeEnv, namespace: str, name: str, operator: OperatorProcess, since: float
) -> list[tuple[float, int | None]]:
    """Wait for 0 replicas from 3; each change seen as (seconds after ``since``, replicas)."""
    seen: list[tuple[float, int | None]] = [(0.0, 3)]

    def record() -> bool:
        now = replicas(kube, namespace, name)
        if now != seen[-1][1]:
            seen.append((time.monotonic() - since, now))
        return now == 0

    wait_until(
        record, timeout=60, interval=0.1, message=lambda: f"scale to zero; seen {seen}\n{operator.log_tail()}"
    )
    return seen


def status_when(
    kube: KubeEnv, namespace: str, name: str, check: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """Wait until the FeedWatcher's status passes ``check``; returns that status."""

    def current() -> dict[str, Any] | None:
        status = read_feedwatcher(kube, namespace, name).get("status") or {}
        return status if check(status) else None

    found = wait_until(current, timeout=10, message=what)
    assert found is not None
    return found


def scaled_events(kube: KubeEnv, namespace: str, name: str) -> list[str]:
    return [e["message"] for e in events(kube, namespace, name) if e["reason"] == "Scaled"]


def gauge(operator: OperatorProcess, metric: str, namespace: str, name: str) -> float | None:
    """One per-FeedWatcher sample of the operator's /metrics (None when absent)."""
    sample = f'{metric}{{name="{name}",namespace="{namespace}"}} '
    for line in operator.metrics().splitlines():
        if line.startswith(sample):
            return float(line.split()[-1])
    return None


def enqueue_partitions(feed: Feed, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        feed.enqueue(f"p{n}", {"i": n})


def test_replicas_follow_the_backlog_up_at_once_down_after_the_window_then_zero_after_the_cooldown(
    crd: KubeEnv, shared_operator: OperatorProcess, operator_namespace: str, feed: Feed
) -> None:
    kube, ns, op = crd, operator_namespace, shared_operator
    create_database_secret(kube, ns)
    create_feedwatcher(kube, ns, autoscaled("scaled", feed))
    body = wait_for_condition(kube, ns, "scaled", "ScalingActive", reason="BacklogRead", operator=op)
    assert "spec.replicas (1) is ignored" in condition(body, "ScalingActive")["message"]
    # An idle feed: the first replica goes after the restart window and the cooldown.
    wait_replicas(kube, ns, "scaled", 0, op, timeout=60)

    feed.pause()  # the 40 partitions appear at once: one read sees them all
    enqueue_partitions(feed, 40)
    feed.resume()
    enqueued = time.monotonic()
    up = wait_replicas(kube, ns, "scaled", 3, op)
    print(f"reaction time from enqueue to 3 replicas: {up - enqueued:.2f} s (pollingInterval {POLL} s)")
    assert up - enqueued <= POLL + MARGIN, f"scaled up {up - enqueued:.1f} s after the enqueue"
    status = status_when(
        kube, ns, "scaled", lambda st: st.get("backlog", {}).get("partitions") == 40, "status.backlog of 40"
    )
    assert status["backlog"]["items"] == 40 and status["desiredReplicas"] == 3
    assert status["backlog"]["oldestItemAgeSeconds"] >= 0 and status["lastScaleTime"]
    assert "scaled 0 -> 3: backlog 40 partitions, target 10" in scaled_events(kube, ns, "scaled")
    assert gauge(op, "feedwatch_operator_desired_replicas", ns, "scaled") == 3
    assert gauge(op, "feedwatch_operator_backlog_partitions", ns, "scaled") == 40

    feed.pause()  # the backlog goes away at once (a paused feed has none) ...
    removed = time.monotonic()
    for n in range(40):  # ... and for good
        feed.cancel(f"p{n}")
    feed.resume()
    seen = replicas_until_zero(kube, ns, "scaled", op, removed)
    assert [r for _, r in seen] == [3, 1, 0], f"one step down after the window, then zero: {seen}"
    down, zero = seen[1][0], seen[2][0]
    assert down >= 4 - POLL - 0.5, f"3 -> 1 came {down:.1f} s after the backlog went (window 4 s)"
    assert zero >= 10 - POLL - 0.5, f"1 -> 0 came {zero:.1f} s after the backlog went (cooldown 10 s)"
    # The status is written just after the Deployment.
    final = status_when(kube, ns, "scaled", lambda st: st.get("desiredReplicas") == 0, "desiredReplicas 0")
    assert final["lastActiveTime"]
    assert condition({"status": final}, "Ready")["reason"] == "ScaledToZero"

    enqueue_partitions(feed, 1, start=100)
    wait_replicas(kube, ns, "scaled", 1, op, timeout=POLL + MARGIN + 2)
    assert "scaled 0 -> 1: backlog 1 partitions, target 10" in scaled_events(kube, ns, "scaled")


def test_an_unreachable_database_keeps_the_replicas_then_falls_back_then_recovers(
    crd: KubeEnv, shared_operator: OperatorProcess, operator_namespace: str, feed: Feed
) -> None:
    kube, ns, op = crd, operator_namespace, shared_operator
    create_database_secret(kube, ns)
    enqueue_partitions(feed, 15)
    create_feedwatcher(kube, ns, autoscaled("failing", feed, fallback={"failureThreshold": 4, "replicas": 3}))
    wait_replicas(kube, ns, "failing", 2, op)

    wrong = make_url(MARIADB_URL).set(password="wrong-password").render_as_string(hide_password=False)
    replace_secret_data(kube, ns, "feedwatch-db", {"url": wrong})
    body = wait_for_condition(
        kube, ns, "failing", "ScalingActive", status="False", reason="BacklogReadFailed", operator=op
    )
    assert "Access denied" in condition(body, "ScalingActive")["message"]
    assert "wrong-password" not in condition(body, "ScalingActive")["message"]
    assert replicas(kube, ns, "failing") == 2, "a failed read keeps the replicas"
    warnings = [e for e in events(kube, ns, "failing") if e["reason"] == "BacklogReadFailed"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"

    wait_for_condition(kube, ns, "failing", "ScalingActive", status="False", reason="FallbackApplied",
                       operator=op, timeout=30)  # fmt: skip
    wait_replicas(kube, ns, "failing", 3, op, timeout=10)
    assert [e["count"] for e in events(kube, ns, "failing") if e["reason"] == "BacklogReadFailed"] == [1], (
        "one Warning per distinct problem, not one per failed read"
    )

    replace_secret_data(kube, ns, "feedwatch-db", {"url": MARIADB_URL})
    wait_for_condition(kube, ns, "failing", "ScalingActive", reason="BacklogRead", operator=op, timeout=30)
    wait_replicas(kube, ns, "failing", 2, op, timeout=15)
    assert any(e["reason"] == "Recovered" for e in events(kube, ns, "failing"))


def test_a_restarted_operator_scales_nothing_down_for_one_window(
    crd: KubeEnv, namespace: str, feed: Feed, tmp_path: Path
) -> None:
    kube, ns, window = crd, namespace, 8
    create_database_secret(kube, ns)
    feed.pause()
    enqueue_partitions(feed, 30)
    feed.resume()
    policy = {"cooldownPeriod": 2, "behavior": {"scaleDown": {"stabilizationWindowSeconds": window}}}
    with OperatorProcess(kube, namespaces=[ns], log_path=tmp_path / "first.log") as first:
        create_feedwatcher(kube, ns, autoscaled("restarted", feed, **policy))
        wait_replicas(kube, ns, "restarted", 3, first)
        status_when(
            kube, ns, "restarted", lambda st: st.get("backlog", {}).get("partitions") == 30, "backlog"
        )
    feed.pause()  # the backlog is gone while no operator runs
    with OperatorProcess(kube, namespaces=[ns], log_path=tmp_path / "second.log") as second:
        seen = replicas_until_zero(kube, ns, "restarted", second, time.monotonic())
    assert seen[1][0] >= window - 1, f"replicas fell {seen[1][0]:.1f} s after the restart (window {window} s)"
