"""/metrics, /healthz, /readyz and JSON logs of a `feedwatch watch` process after a real run."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from feedwatch import Feed, Store
from feedwatch.testing import wait_for
from tests.service.helpers import (
    answers,
    cli,
    fresh_sqlite,
    history,
    item_counts,
    log_text,
    metrics,
    sample,
    store_for,
    watched_to_the_end,
)
from tests.support.handler import Handler

pytestmark = pytest.mark.service


@dataclass
class Observed:
    store: Store
    feed: Feed
    handler: Handler
    watcher: subprocess.Popen[bytes]
    log: Path
    base: str


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    directory = tmp_path_factory.mktemp("observed")
    url = fresh_sqlite(directory)
    store = store_for(url)
    name = f"obs{uuid.uuid4().hex[:8]}"
    feed = Feed.create(store, name, max_retries=1, backoff_base=0.05, backoff_cap=0.1, poll_delay=0.05)
    for n in range(3):
        feed.enqueue(f"gates{n}", {f"i{k}": {"behave": "gates", "last": 2} for k in range(4)})
    feed.enqueue("fails", {"bad": {"behave": "no_retry"}, "good": {}})
    feed.enqueue("recovers", {"flaky": {"behave": "500_then_ok", "times": 1}, "good": {}})
    feed.enqueue("polls", {"slow": {"behave": "poll"}})
    feed.update(poll_limit=2)
    args = ["--log-format", "json", "--handler-health-path", "/healthz"]
    with watched_to_the_end(directory, url, feed, args=args) as run:
        yield Observed(store, feed, run.handler, run.watcher, run.log, run.health)


def _compare(o: Observed) -> dict[str, tuple[float, float]]:
    """Every metric next to what the database says; only the mismatches."""
    name = o.feed.name
    values = metrics(o.base + "/metrics")
    events = Counter(h.event for h in history(o.store, name))
    items = item_counts(o.store, name)
    parts = Counter(p.status for p in o.feed.partitions())
    pairs: dict[str, tuple[float, float]] = {
        f"items_total{{outcome={kind}}}": (
            sample(values, "feedwatch_items_total", feed=name, outcome=kind),
            events[kind],
        )
        for kind in ("complete", "gate", "poll", "retry", "delay", "fail")
    }
    pairs["items_total{outcome=complete} vs items complete"] = (
        sample(values, "feedwatch_items_total", feed=name, outcome="complete"),
        items.get("complete", 0),
    )
    pairs["items_total{outcome=fail} vs items failed"] = (
        sample(values, "feedwatch_items_total", feed=name, outcome="fail"),
        items.get("failed", 0),
    )
    pairs["gate_advances_total"] = (
        sample(values, "feedwatch_gate_advances_total", feed=name),
        events["gate_advanced"],
    )
    for status in ("complete", "failed"):
        pairs[f"partitions_closed_total{{status={status}}}"] = (
            sample(values, "feedwatch_partitions_closed_total", feed=name, status=status),
            parts[status],
        )
    pairs["leases_held"] = (sample(values, "feedwatch_leases_held", feed=name), 0)
    pairs["in_flight"] = (sample(values, "feedwatch_in_flight", feed=name), 0)
    return {k: v for k, v in pairs.items() if v[0] != v[1]}


def test_metrics_after_a_run_match_the_database(observed: Observed) -> None:
    mismatches: dict[str, Any] = {}

    def agree() -> bool:
        mismatches.clear()
        mismatches.update(_compare(observed))
        return not mismatches

    wait_for(agree, timeout=30, message=f"/metrics to match the database: {mismatches}")
    values = metrics(observed.base + "/metrics")
    name = observed.feed.name
    complete = sample(values, "feedwatch_items_total", feed=name, outcome="complete")
    assert complete == item_counts(observed.store, name)["complete"] == 3 * 4 + 1 + 2
    assert sample(values, "feedwatch_items_total", feed=name, outcome="retry") == 1
    assert sample(values, "feedwatch_gate_advances_total", feed=name) == 3 * 2


def test_healthz_answers_200(observed: Observed) -> None:
    assert answers(observed.base + "/healthz") == (200, '{"status": "ok"}')


def test_readyz_is_200_with_the_database_up_and_503_when_the_handler_health_path_fails(
    observed: Observed,
) -> None:
    status, body = answers(observed.base + "/readyz") or (0, "")
    assert status == 200, body
    assert json.loads(body) == {"ready": True, "checks": {"database": True, "handler": True}}
    observed.handler.control(health=503)
    try:
        status, body = wait_for(
            lambda: (r := answers(observed.base + "/readyz")) and r[0] == 503 and r,
            timeout=30,
            message="/readyz to answer 503",
        )
        assert json.loads(body) == {"ready": False, "checks": {"database": True, "handler": False}}
    finally:
        observed.handler.control(health=200)
    wait_for(
        lambda: (r := answers(observed.base + "/readyz")) and r[0] == 200,
        timeout=30,
        message="/readyz to recover",
    )


def test_json_logs_are_json_lines_with_an_action_on_lease_gate_and_close_events(
    observed: Observed,
) -> None:
    lines = [line for line in log_text(observed.log).splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= e.keys() for e in entries)
    by_action: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_action.setdefault(entry.get("action", ""), []).append(entry)
    for action in ("lease_acquired", "gate_advanced", "partition_completed", "partition_failed"):
        assert action in by_action, sorted(by_action)
        for entry in by_action[action]:
            assert entry["feed"] == observed.feed.name
            assert {"partition", "owner", "gate"} <= entry.keys(), entry
    completed = {e["partition"] for e in by_action["partition_completed"]}
    assert completed == {"gates0", "gates1", "gates2", "recovers"}
    assert {e["partition"] for e in by_action["partition_failed"]} == {"fails", "polls"}
    assert {e["gate"] for e in by_action["gate_advanced"]} == {1, 2}  # the gate reached
    assert {"watch_started", "watcher_started"} <= by_action.keys()


def test_a_health_port_in_use_is_one_clear_error_not_a_traceback(tmp_path: Path) -> None:
    url = fresh_sqlite(tmp_path)
    Feed.create(store_for(url), "busy")
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - the health server binds every address
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(
            "watch",
            "--db",
            url,
            "--feed",
            "busy",
            "--handler",
            "http://127.0.0.1:9/",
            "--health-port",
            str(port),
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"feedwatch: error: cannot serve /healthz, /readyz and /metrics on 0.0.0.0:{port}: "
        f"error while attempting to bind on address ('0.0.0.0', {port}): address already in use "
        "(health_port)"
    )
