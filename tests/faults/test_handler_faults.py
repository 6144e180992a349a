"""A misbehaving handler: 30 % of calls fail in assorted ways, and poison items always fail."""

from __future__ import annotations

import pytest

from tests.support.fault_checks import Expected, verify
from tests.support.faults import RecoveryLog, Scenario, enqueue_workload, wait_drained

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def test_a_failing_handler_retries_to_completion_and_poison_items_fail_with_their_reason(
    scenario: Scenario, database: str, shared_url: str, recovery: RecoveryLog
) -> None:
    # 30 % of calls: 15 % HTTP 500, 5 % past the 1 s handler timeout, 5 % connection
    # resets, 5 % slow (answered, late but in time). Seeded: the run is repeatable.
    handler = scenario.handler(
        last_gate=2, delay=0.02, p_500=0.15, p_timeout=0.05, timeout_seconds=1.5, p_reset=0.05,
        p_slow=0.05, slow_seconds=0.5, poison_prefix="poison", fatal_prefix="fatal", seed=5,
    )  # fmt: skip
    # skip: a poison item is a dead letter, its partition goes on; 10 retries make a
    # non-poison item failing by chance unlikely (0.3^11 per step).
    feed = scenario.feed(shared_url, max_retries=10, failure_policy="skip", backoff_cap=0.3)
    store = feed.store
    expected = Expected()
    enqueue_workload(feed, expected, partitions=4, items=20, last_gate=2)
    poison = {("p0", "poison-a"): 0, ("p2", "poison-b"): 1, ("p3", "fatal-c"): 0}
    for (part, item), gate in poison.items():
        feed.enqueue(part, {item: expected.add(part, item, 2, gate)}, gate=gate)
        expected.failed[(part, item)] = (
            r"gave up after 11 failed attempts \(max_retries=10\); last error: the handler "
            r"answered HTTP 500" if item.startswith("poison") else r"^fatal item$"
        )  # fmt: skip
    fleet = scenario.fleet(shared_url, feed, handler)
    fleet.start(3, args=["--handler-timeout", "1"])
    drained = wait_drained(store, feed.name, 180)
    fleet.stop_and_check()
    calls = handler.calls(feed.name)
    report = verify(store, feed.name, expected, calls, skip_policy=True)
    outcomes = {o: sum(1 for c in calls if c.outcome == o) for o in {c.outcome for c in calls}}
    for kind in ("500", "timeout", "reset", "done-slow"):
        assert outcomes.get(kind), f"the handler never injected {kind}: {outcomes}"
    # Per item and gate: from its first failed call to its first call that got an answer.
    first_failure: dict[tuple[str, str, int], float] = {}
    worst = 0.0
    for c in calls:
        key = (c.partition, c.item, c.gate)
        if c.outcome in ("500", "timeout", "reset"):
            first_failure.setdefault(key, c.t)
        elif c.outcome.startswith(("done", "gate")) and key in first_failure:
            worst = max(worst, c.t - first_failure.pop(key))
    recovery.record(
        f"5. {database}: handler: 30 % 500/timeout/reset/slow + poison",
        "worst first failure -> answered call (item, gate)",
        worst, f"(drained in {drained:.1f} s)",
    )  # fmt: skip
    print(f"handler faults: {outcomes}; {report}")
