"""The lease table: the partitions this watcher holds, and what it knows of each.

The lease keeper adds to it (acquisitions, hand-offs received); every part may
drop a lease (lost, released, closed, handed off). Dropping wakes the lease
keeper through ``on_drop`` (the watcher is below its target now) and keeps the
``feedwatch_leases_held`` gauge true; nothing else of the watcher is reached.
"""

from __future__ import annotations

import math
from collections.abc import Callable, ItemsView, Iterator, ValuesView
from dataclasses import dataclass
from typing import Literal

from feedwatch.observability.actions import Action
from feedwatch.observability.logging import FeedLogger
from feedwatch.observability.metrics import Metrics


@dataclass
class Lease:
    """A partition this watcher holds, and what the dispatcher knows of it."""

    pk: int
    id: str
    gate: int
    epoch: int
    trusted_until: float
    in_flight: int = 0
    #: A claim for this partition is on its way: its items count as in flight for a hand-off.
    claiming: bool = False
    idle_until: float = 0.0
    handing_to: str | None = None
    handoff_deadline: float = math.inf
    received_at: float = 0.0
    empty_work: int = 0
    #: The last claim took every item due at the gate (``ClaimBatch.exhausted``), so
    #: the results in flight may be the gate's last (a fan-in point).
    drained: bool = False
    dropped: bool = False
    #: Whether a suspect waits at this lease's gate: not looked yet, none, or one pending.
    suspects: Literal["unknown", "none", "pending"] = "unknown"

    def trusted(self, mono: float) -> bool:
        return not self.dropped and mono < self.trusted_until


class LeaseTable:
    """The leases held, by partition pk; a dict to read, :meth:`add` and :meth:`drop` to change."""

    def __init__(self, *, log: FeedLogger, metrics: Metrics, on_drop: Callable[[], None]) -> None:
        self._held: dict[int, Lease] = {}
        self._log = log
        self._metrics = metrics
        self._on_drop = on_drop

    def __len__(self) -> int:
        return len(self._held)

    def __iter__(self) -> Iterator[int]:
        return iter(self._held)

    def __contains__(self, pk: object) -> bool:
        return pk in self._held

    def get(self, pk: int) -> Lease | None:
        return self._held.get(pk)

    def values(self) -> ValuesView[Lease]:
        return self._held.values()

    def items(self) -> ItemsView[int, Lease]:
        return self._held.items()

    def add(self, lease: Lease) -> None:
        self._held[lease.pk] = lease

    def count(self) -> None:
        """Publish how many leases are held."""
        self._metrics.leases.set(len(self._held))

    def drop(self, lease: Lease, action: Action, message: str) -> None:
        """Forget a lease locally (the database side was already written or lost)."""
        if lease.dropped:
            return
        lease.dropped = True
        self._held.pop(lease.pk, None)
        self._on_drop()  # below target now: balance at the next pass
        self.count()
        self.event(lease, action, message)

    def event(self, lease: Lease, action: Action, message: str) -> None:
        self._log.info(message, extra={"action": action, "partition": lease.id, "gate": lease.gate})

    def follow_gate(self, lease: Lease, gate: int) -> None:
        """The partition's gate moved under us (by hand, or by a checkpoint): work the new one."""
        if gate == lease.gate:
            return
        self.event(lease, Action.GATE_MOVED, f"{lease.id!r} is at gate {gate} now (was {lease.gate} here)")
        lease.gate = gate
        lease.empty_work = 0
        lease.suspects = "unknown"  # suspects are looked for gate by gate
