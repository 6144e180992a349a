"""Plain records the store hands to the engine and the producer API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, NamedTuple

OutcomeKind = Literal["complete", "gate", "poll", "retry", "delay", "fail"]


@dataclass(frozen=True)
class PartitionRow:
    """A partition as stored."""

    pk: int
    feed: str
    id: str
    status: str
    gate: int
    version: int
    ready_at: datetime | None
    owner: str | None
    lease_until: datetime | None
    lease_epoch: int
    steal_by: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class LeaseRow:
    """What a lease holder needs to know of a partition it owns."""

    pk: int
    id: str
    status: str
    gate: int
    lease_epoch: int
    lease_until: datetime
    steal_by: str | None


@dataclass(frozen=True)
class ItemRow:
    """An item as stored (``data`` is its latest data: input, then results)."""

    pk: int
    partition_pk: int
    id: str
    status: str
    gate: int
    version: int
    data: bytes | None
    content_type: str
    attempts: int
    failures: int
    polls: int
    unanswered: int
    next_attempt_at: datetime
    error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Claimed:
    """An item claimed for dispatch; ``version`` is the one its result must carry."""

    pk: int
    id: str
    gate: int
    version: int
    attempt: int
    failures: int
    polls: int
    data: bytes | None
    content_type: str
    #: It was in flight when a watcher died (dispatched without an answer).
    suspect: bool = False


@dataclass(frozen=True)
class ClaimRequest:
    """Up to ``limit`` items of a held partition, at its gate, under its lease epoch."""

    partition_pk: int
    epoch: int
    gate: int
    limit: int


@dataclass
class ClaimBatch:
    """What one claim got: items per partition, partitions no longer held, and what it learnt.

    ``moved``: partitions whose gate is no longer the one asked for (a hand move or
    a checkpoint), with their gate now; nothing was claimed from them.
    ``suspects``: partitions where a suspect waits to run alone.
    ``exhausted``: partitions where this claim took every item due at the gate
    (the results now in flight may be the gate's last: a fan-in point).
    """

    claimed: dict[int, list[Claimed]] = field(default_factory=dict)
    lost: set[int] = field(default_factory=set)
    failed: int = 0
    moved: dict[int, int] = field(default_factory=dict)
    suspects: set[int] = field(default_factory=set)
    exhausted: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class ItemOutcome:
    """The new state of a dispatched item, computed by the engine, written by the store."""

    pk: int
    partition_pk: int
    version: int
    kind: OutcomeKind
    status: str
    gate: int
    next_attempt_at: datetime
    failures: int
    polls: int
    attempt: int
    error: str | None = None
    set_data: bool = False
    data: bytes | None = None


@dataclass
class PartitionSummary:
    """Counts per status and gate, and the failed items with their errors."""

    partition: PartitionRow
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    failed: list[tuple[str, int, str | None]] = field(default_factory=list)


@dataclass(frozen=True)
class HistoryRow:
    """One transition of an item or a partition."""

    pk: int
    partition_pk: int
    item_pk: int | None
    event: str
    from_version: int
    from_status: str | None
    to_status: str
    gate: int
    attempt: int | None
    owner: str | None
    message: str | None
    at: datetime


class GateDue(NamedTuple):
    """A gate holding available items, and the earliest ``next_attempt_at`` among them."""

    gate: int
    due: datetime


class FailedItem(NamedTuple):
    """A failed item of a partition, as a checkpoint sees it."""

    id: str
    gate: int
    error: str | None


@dataclass(frozen=True)
class GateSnapshot:
    """What a checkpoint read of a partition (its row locked), and the feed's rules for it.

    All a gate rule (``feedwatch.engine.gating.next_step``) decides on; the
    store reads it and writes the decision in the same transaction.
    """

    gate: int
    now: datetime
    #: Gates holding available items, lowest first.
    available: tuple[GateDue, ...]
    #: The first failed item (lowest gate, then oldest), if any.
    failed: FailedItem | None
    auto_close: bool
    manual_checkpoint: bool
    failure_policy: str
    #: Seconds within which an item due soon keeps the partition held, not released.
    hold_for: float


@dataclass(frozen=True)
class CheckpointPolicy:
    """How a partition with nothing left to claim moves on: the feed's rules and the gate rule.

    ``rule`` is the engine's (``feedwatch.engine.gating.next_step``), handed to
    the store as an argument so the store imports nothing from the engine.
    """

    auto_close: bool
    manual_checkpoint: bool
    failure_policy: str
    hold_for: float
    rule: Callable[[GateSnapshot], CheckpointDecision]


@dataclass(frozen=True)
class CheckpointDecision:
    """What a checkpoint evaluation concluded, and whether it was written."""

    action: Literal["work", "waiting", "advanced", "failed", "completed", "idle", "lost", "held"]
    gate: int
    ready_at: datetime | None = None
    message: str | None = None


@dataclass(frozen=True)
class Backlog:
    """The work waiting in a feed, as the autoscaler sees it (counts stop at ``limit``).

    ``partitions``: available partitions with work due now, leased or not.
    ``items``: available items at their partition's gate and due, in those partitions.
    ``leased``: available partitions under a live lease (someone may be working them).
    A count equal to ``limit`` means "at least ``limit``".
    """

    partitions: int
    items: int
    oldest_item_age_seconds: float
    leased: int
    limit: int
    paused: bool
    read_at: datetime
