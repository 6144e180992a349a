"""The scaling decision: how many watchers a feed's backlog calls for. Pure: no I/O, no clock.

KEDA's meanings, with the HPA's scale-down rule:

- ``desired = clamp(min(ceil(backlog / target), due partitions), floor, max)``: a
  partition is worked by one watcher at a time, so more watchers than due
  partitions would idle. ``floor`` is ``minReplicaCount``, but at least 1 while
  the feed is active or watchers are running: only the zero step below goes to 0.
- Active: the backlog is above ``activationBacklog``. 0 -> 1 only while active.
- Up: at once. Down (N -> fewer, N >= 1): to the highest recommendation of the
  last ``stabilizationWindowSeconds``, so a backlog that comes and goes does not
  make replicas flap. The recommendations are kept in memory; a fresh memory
  (an operator restart, a FeedWatcher first seen) allows no scale-down at all,
  the zero step included, for one window.
- Zero (any -> 0, only when ``minReplicaCount`` is 0): the feed inactive, no
  partition leased (no watcher is in the middle of work), and ``now -
  lastActiveTime >= cooldownPeriod``. ``lastActiveTime`` is persisted in the
  status, so a restart does not shorten the cooldown.
- A failed read keeps the current replicas (never 0 because a query failed);
  after ``fallback.failureThreshold`` consecutive failures ``fallback.replicas``
  applies, until a read succeeds again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

Reason = Literal["BacklogRead", "BacklogReadFailed", "FallbackApplied"]


@dataclass(frozen=True)
class Policy:
    """The autoscaling settings the decision needs (from ``spec.autoscaling``), in seconds."""

    min_replicas: int
    max_replicas: int
    target: int
    metric: str = "partitions"
    activation: int = 0
    cooldown: float = 300.0
    window: float = 300.0
    fallback_threshold: int | None = None
    fallback_replicas: int | None = None
    #: A hard cap below max_replicas (SQLite: one replica), and why.
    cap: int | None = None
    cap_reason: str = ""

    @property
    def ceiling(self) -> int:
        return self.max_replicas if self.cap is None else min(self.max_replicas, self.cap)


@dataclass(frozen=True)
class Reading:
    """One successful backlog read: the metric's count, due partitions, leased partitions."""

    backlog: int
    due_partitions: int
    leased: int


@dataclass(frozen=True)
class Memory:
    """What the decision remembers between reads of one FeedWatcher (kept in the operator's memory)."""

    #: When this memory began: no scale-down for one window after it.
    since: datetime
    #: (time, recommendation) of the reads within the last window.
    recommendations: tuple[tuple[datetime, int], ...] = ()
    failures: int = 0
    #: The last time the feed was seen active (or first seen idle); seeded from
    #: ``status.lastActiveTime`` after a restart (else the restart time).
    last_active: datetime | None = None
    #: Whether the previous successful read found the feed active.
    was_active: bool | None = None


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: Reason
    #: What the backlog alone asks for (before stabilisation and cooldown); None after a failed read.
    recommendation: int | None
    active: bool | None
    memory: Memory
    #: Why the replicas are what they are, for conditions and Events.
    explanation: str
    #: The feed just turned inactive (write lastActiveTime now).
    turned_inactive: bool = False
    notes: Sequence[str] = field(default_factory=tuple)


def recommend(reading: Reading, policy: Policy, *, running: bool) -> int:
    """Replicas for this backlog alone: ``clamp(min(ceil(backlog/target), due), floor, max)``."""
    active = reading.backlog > policy.activation
    wanted = math.ceil(reading.backlog / policy.target) if (active or running) else 0
    wanted = min(wanted, reading.due_partitions)
    floor = max(policy.min_replicas, 1) if (active or running) else policy.min_replicas
    return max(min(wanted, policy.ceiling), min(floor, policy.ceiling))


def decide(
    *, reading: Reading | None, current: int | None, policy: Policy, memory: Memory, now: datetime
) -> Decision:
    """The replicas to run now, the reason for the ScalingActive condition, and the new memory."""
    if reading is None:
        return _failed(current, policy, memory)
    running = current is not None and current > 0
    have = current if current is not None else 0
    active = reading.backlog > policy.activation
    recommendation = recommend(reading, policy, running=running)
    window_start = now - timedelta(seconds=policy.window)
    kept = (*((t, r) for t, r in memory.recommendations if t > window_start), (now, recommendation))
    last_active = now if active else memory.last_active
    turned_inactive = not active and (memory.was_active is not False)
    if not active and last_active is None:
        last_active = now  # never seen active: the cooldown starts at the first idle read
    memory = replace(memory, recommendations=kept, failures=0, last_active=last_active, was_active=active)
    settling = now - memory.since < timedelta(seconds=policy.window)
    if recommendation >= have:
        replicas, why = recommendation, _describe(reading, policy)
    elif settling:
        replicas = have
        why = f"{_describe(reading, policy)}; no scale-down within {policy.window:g} s of a restart"
    else:
        replicas = min(have, max(r for _, r in kept))
        why = _describe(reading, policy)
        if replicas > recommendation:
            why += f"; held at {replicas} by the {policy.window:g} s stabilization window"
    if replicas > 0 and _may_sleep(reading, policy, memory, now, settling):
        replicas = 0
        why = f"idle for {policy.cooldown:g} s (cooldown) with no partition leased"
    notes = (policy.cap_reason,) if policy.cap is not None and policy.cap < policy.max_replicas else ()
    return Decision(replicas, "BacklogRead", recommendation, active, memory, why, turned_inactive, notes)


def _may_sleep(reading: Reading, policy: Policy, memory: Memory, now: datetime, settling: bool) -> bool:
    """The zero step: min 0, inactive, nothing leased, cooldown elapsed since last active."""
    if policy.min_replicas > 0 or reading.backlog > policy.activation or reading.leased > 0 or settling:
        return False
    last = memory.last_active
    return last is not None and (now - last).total_seconds() >= policy.cooldown


def _failed(current: int | None, policy: Policy, memory: Memory) -> Decision:
    failures = memory.failures + 1
    memory = replace(memory, failures=failures)
    threshold, fallback = policy.fallback_threshold, policy.fallback_replicas
    if threshold is not None and fallback is not None and failures >= threshold:
        replicas = min(fallback, policy.ceiling)
        why = f"{failures} backlog reads failed in a row: fallback to {replicas} replicas"
        return Decision(replicas, "FallbackApplied", None, None, memory, why)
    replicas = current if current is not None else min(max(policy.min_replicas, 1), policy.ceiling)
    why = f"backlog read failed ({failures} in a row): replicas kept at {replicas}"
    return Decision(replicas, "BacklogReadFailed", None, None, memory, why)


def _describe(reading: Reading, policy: Policy) -> str:
    return f"backlog {reading.backlog} {policy.metric}, target {policy.target}"
