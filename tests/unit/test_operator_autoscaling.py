"""The scaling decision, branch by branch (a pure function: no cluster, no database)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from feedwatch.operator.autoscaling import Decision, Memory, Policy, Reading, decide, recommend

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, 0)
POLICY = Policy(min_replicas=0, max_replicas=3, target=10, cooldown=300, window=60)
#: A memory that began long ago: no restart window in the way.
SETTLED = Memory(since=T0 - timedelta(hours=1), last_active=T0 - timedelta(seconds=10), was_active=True)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("backlog", "due", "running", "policy", "expected"),
    [
        (0, 0, False, POLICY, 0),  # idle and asleep: stays at min 0
        (1, 1, False, POLICY, 1),  # active: 0 -> 1
        (42, 42, False, POLICY, 3),  # ceil(42/10) = 5, clamped to max 3
        (25, 25, True, replace(POLICY, max_replicas=10), 3),  # ceil(25/10)
        (500, 2, True, replace(POLICY, max_replicas=10), 2),  # never above the due partitions
        (0, 0, True, POLICY, 1),  # running watchers: only the zero step goes to 0
        (0, 0, False, replace(POLICY, min_replicas=2), 2),  # min replicas always
        (3, 3, False, replace(POLICY, activation=5), 0),  # not above activationBacklog: stays at 0
        (6, 6, False, replace(POLICY, activation=5), 1),  # above it: 0 -> 1
        (42, 42, True, replace(POLICY, cap=1, cap_reason="SQLite"), 1),  # capped
    ],
)
def test_the_recommendation_is_the_clamped_ceiling_of_backlog_per_target(
    backlog: int, due: int, running: bool, policy: Policy, expected: int
) -> None:
    assert recommend(Reading(backlog, due, 0), policy, running=running) == expected


def test_scale_up_is_immediate() -> None:
    d = decide(reading=Reading(40, 40, 0), current=1, policy=POLICY, memory=SETTLED, now=T0)
    assert (d.replicas, d.reason, d.explanation) == (3, "BacklogRead", "backlog 40 partitions, target 10")


def test_zero_to_one_only_while_active() -> None:
    policy = replace(POLICY, activation=2)
    quiet = decide(reading=Reading(2, 2, 0), current=0, policy=policy, memory=SETTLED, now=T0)
    busy = decide(reading=Reading(3, 3, 0), current=0, policy=policy, memory=SETTLED, now=T0)
    assert (quiet.replicas, quiet.active, busy.replicas, busy.active) == (0, False, 1, True)


def test_scale_down_waits_for_the_highest_recommendation_of_the_window() -> None:
    high = decide(reading=Reading(40, 40, 0), current=1, policy=POLICY, memory=SETTLED, now=at(0))
    low = decide(reading=Reading(5, 5, 2), current=3, policy=POLICY, memory=high.memory, now=at(30))
    assert (low.recommendation, low.replicas) == (1, 3)
    assert "stabilization window" in low.explanation
    later = decide(reading=Reading(5, 5, 2), current=3, policy=POLICY, memory=low.memory, now=at(61))
    assert later.replicas == 1, "the 3 fell out of the 60 s window"


def test_scale_down_never_raises_replicas_to_an_old_recommendation() -> None:
    high = decide(reading=Reading(40, 40, 0), current=1, policy=POLICY, memory=SETTLED, now=at(0))
    d = decide(reading=Reading(10, 10, 1), current=2, policy=POLICY, memory=high.memory, now=at(10))
    assert d.replicas == 2


def test_no_scale_down_for_one_window_after_a_restart() -> None:
    fresh = Memory(since=T0)
    held = decide(reading=Reading(5, 5, 0), current=3, policy=POLICY, memory=fresh, now=at(30))
    assert held.replicas == 3 and "restart" in held.explanation
    after = decide(reading=Reading(5, 5, 0), current=3, policy=POLICY, memory=held.memory, now=at(61))
    assert after.replicas == 1


def test_one_to_zero_only_after_the_cooldown_with_nothing_leased() -> None:
    memory = replace(SETTLED, last_active=at(0), was_active=False)
    early = decide(reading=Reading(0, 0, 0), current=1, policy=POLICY, memory=memory, now=at(299))
    leased = decide(reading=Reading(0, 0, 1), current=1, policy=POLICY, memory=memory, now=at(300))
    asleep = decide(reading=Reading(0, 0, 0), current=1, policy=POLICY, memory=memory, now=at(300))
    assert (early.replicas, leased.replicas, asleep.replicas) == (1, 1, 0)
    assert "cooldown" in asleep.explanation


def test_the_cooldown_counts_from_the_last_active_read() -> None:
    active = decide(reading=Reading(5, 5, 0), current=1, policy=POLICY, memory=SETTLED, now=at(0))
    idle = decide(reading=Reading(0, 0, 0), current=1, policy=POLICY, memory=active.memory, now=at(100))
    assert idle.turned_inactive and idle.memory.last_active == at(0)
    still = decide(reading=Reading(0, 0, 0), current=1, policy=POLICY, memory=idle.memory, now=at(200))
    assert not still.turned_inactive, "lastActiveTime is written once, when the feed turns inactive"
    gone = decide(reading=Reading(0, 0, 0), current=1, policy=POLICY, memory=still.memory, now=at(300))
    assert gone.replicas == 0


def test_a_feed_never_seen_active_starts_its_cooldown_at_the_first_idle_read() -> None:
    fresh = Memory(since=at(-1000))
    first = decide(reading=Reading(0, 0, 0), current=1, policy=POLICY, memory=fresh, now=at(0))
    assert (first.replicas, first.memory.last_active, first.turned_inactive) == (1, at(0), True)
    done = decide(reading=Reading(0, 0, 0), current=1, policy=POLICY, memory=first.memory, now=at(300))
    assert done.replicas == 0


def test_min_replicas_above_zero_never_sleeps() -> None:
    policy = replace(POLICY, min_replicas=1)
    memory = replace(SETTLED, last_active=at(-10_000))
    assert decide(reading=Reading(0, 0, 0), current=1, policy=policy, memory=memory, now=T0).replicas == 1


def test_a_failed_read_keeps_the_current_replicas_then_falls_back() -> None:
    policy = replace(POLICY, fallback_threshold=3, fallback_replicas=2)
    memory = SETTLED
    seen: list[Decision] = []
    for n in range(4):
        d = decide(reading=None, current=0, policy=policy, memory=memory, now=at(n))
        seen.append(d)
        memory = d.memory
    assert [(d.replicas, d.reason) for d in seen] == [
        (0, "BacklogReadFailed"), (0, "BacklogReadFailed"), (2, "FallbackApplied"), (2, "FallbackApplied"),
    ]  # fmt: skip
    back = decide(reading=Reading(0, 0, 0), current=2, policy=policy, memory=memory, now=at(5))
    assert back.reason == "BacklogRead" and back.memory.failures == 0


def test_without_fallback_failures_never_change_replicas() -> None:
    memory = SETTLED
    for n in range(10):
        d = decide(reading=None, current=3, policy=POLICY, memory=memory, now=at(n))
        assert (d.replicas, d.reason) == (3, "BacklogReadFailed")
        memory = d.memory


def test_flapping_backlog_does_not_flap_replicas() -> None:
    memory, current, replicas = SETTLED, 0, []
    for n in range(20):  # 40, 0, 40, 0 ... every 15 s
        d = decide(
            reading=Reading(40 if n % 2 == 0 else 0, 40 if n % 2 == 0 else 0, 0),
            current=current, policy=POLICY, memory=memory, now=at(15 * n),
        )  # fmt: skip
        memory, current = d.memory, d.replicas
        replicas.append(current)
    assert replicas == [3] * 20


def test_the_sqlite_cap_is_said() -> None:
    policy = replace(POLICY, cap=1, cap_reason="SQLite: one watcher at a time")
    d = decide(reading=Reading(40, 40, 0), current=1, policy=policy, memory=SETTLED, now=T0)
    assert d.replicas == 1 and d.notes == ("SQLite: one watcher at a time",)
