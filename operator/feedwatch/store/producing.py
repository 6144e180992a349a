"""Queries of the producer side: feeds, enqueue, reading back, re-drive, retention."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from feedwatch.errors import (
    ConflictError,
    FeedNotFoundError,
    GateError,
    PartitionNotFoundError,
)
from feedwatch.settings import FeedSettings
from feedwatch.store.base import StoreBase, new_token
from feedwatch.store.records import HistoryRow, ItemRow, PartitionRow, PartitionSummary

_FEED_FIELDS = [f.name for f in dataclasses.fields(FeedSettings)]
_CHUNK = 1000


@dataclasses.dataclass(frozen=True)
class NewItem:
    """An item to enqueue, already validated and encoded."""

    id: str
    data: bytes | None
    content_type: str
    input_hash: str


@dataclasses.dataclass(frozen=True)
class EnqueueResult:
    partition_pk: int
    created_partition: bool
    added: int
    unchanged: int
    gate: int
    reopened: bool


class ProducingQueries(StoreBase):
    # -- feeds ------------------------------------------------------------

    def save_feed(self, name: str, settings: FeedSettings, now: datetime, *, create_only: bool) -> bool:
        """Create the feed, or update its settings; return True if it was created."""
        f = self.tables.feeds
        values = {k: getattr(settings, k) for k in _FEED_FIELDS}

        def work(conn: Connection) -> bool:
            exists = conn.execute(select(f.c.version).where(f.c.name == name)).first()
            if exists is None:
                conn.execute(insert(f).values(name=name, version=1, created_at=now, updated_at=now, **values))
                return True
            if not create_only:
                conn.execute(
                    update(f)
                    .where(f.c.name == name)
                    .values(version=f.c.version + 1, updated_at=now, **values)
                )
            return False

        try:
            return self.transaction(work)
        except IntegrityError:
            return False  # created concurrently by another producer

    def load_feed(self, name: str) -> FeedSettings:
        f = self.tables.feeds
        row = self.transaction(lambda c: c.execute(select(f).where(f.c.name == name)).first(), readonly=True)
        if row is None:
            raise FeedNotFoundError(
                f"feed {name!r} does not exist: create it with `feedwatch feed create {name}` "
                "or Feed.create()"
            )
        m = row._mapping
        return FeedSettings(**{k: m[k] for k in _FEED_FIELDS})

    def feed_names(self) -> list[str]:
        f = self.tables.feeds
        return self.transaction(
            lambda c: [r[0] for r in c.execute(select(f.c.name).order_by(f.c.name))], readonly=True
        )

    # -- enqueue ----------------------------------------------------------

    def enqueue(
        self,
        feed: str,
        partition: str,
        items: Sequence[NewItem],
        gate: int | None,
        due: datetime,
        now: datetime,
        history: bool,
    ) -> EnqueueResult:
        """Add items to a partition (created if new) in one transaction.

        Same id and payload: a no-op. Same id, other payload: :class:`ConflictError`
        naming the ids, and nothing is written. Producers bump the partition's
        version, which fences the owner's checkpoint decisions, never its lease.
        """
        p, i = self.tables.partitions, self.tables.items

        def work(conn: Connection) -> EnqueueResult:
            row = conn.execute(
                select(p.c.pk, p.c.gate, p.c.version, p.c.status, p.c.ready_at)
                .where(p.c.feed == feed, p.c.id == partition)
                .with_for_update()
            ).first()
            created = row is None
            if row is None:
                pk = conn.execute(
                    insert(p).values(
                        feed=feed,
                        id=partition,
                        status="available",
                        gate=gate or 0,
                        version=0,
                        ready_at=due,
                        lease_epoch=0,
                        created_at=now,
                        updated_at=now,
                    )
                ).inserted_primary_key
                row = conn.execute(
                    select(p.c.pk, p.c.gate, p.c.version, p.c.status, p.c.ready_at).where(p.c.pk == pk[0])  # type: ignore[index]
                ).one()
            target = row.gate if gate is None else gate
            if target < row.gate:
                raise GateError(
                    f"cannot enqueue into partition {partition!r} at gate {target}: it is at gate "
                    f"{row.gate} and would never process them; enqueue at gate >= {row.gate}"
                )
            existing: dict[str, str] = {}
            ids = [it.id for it in items]
            for start in range(0, 0 if created else len(ids), _CHUNK):
                existing.update(
                    conn.execute(
                        select(i.c.id, i.c.input_hash).where(
                            i.c.partition_pk == row.pk,
                            i.c.id.in_(bindparam("ids", expanding=True)),
                        ),
                        {"ids": ids[start : start + _CHUNK]},
                    ).all()
                )
            conflicts = [it.id for it in items if it.id in existing and existing[it.id] != it.input_hash]
            if conflicts:
                shown = ", ".join(repr(c) for c in conflicts[:10])
                raise ConflictError(
                    f"partition {partition!r} already has item(s) {shown}"
                    f"{' and more' if len(conflicts) > 10 else ''} with a different payload; "
                    "use new ids, or delete the partition first"
                )
            new = [it for it in items if it.id not in existing]
            for start in range(0, len(new), _CHUNK):
                conn.execute(
                    insert(i),
                    [
                        {
                            "partition_pk": row.pk,
                            "id": it.id,
                            "status": "available",
                            "gate": target,
                            "version": 0,
                            "data": it.data,
                            "content_type": it.content_type,
                            "input_hash": it.input_hash,
                            "attempts": 0,
                            "failures": 0,
                            "polls": 0,
                            "unanswered": 0,
                            "next_attempt_at": due,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for it in new[start : start + _CHUNK]
                    ],
                )
            reopened = False
            if new or created:
                status = row.status
                if status == "complete":
                    status, reopened = "available", True
                ready = row.ready_at
                if status == "available":
                    ready = due if ready is None else min(ready, due)
                conn.execute(
                    update(p)
                    .where(p.c.pk == row.pk, p.c.version == row.version)
                    .values(
                        version=p.c.version + 1,
                        status=status,
                        ready_at=ready,
                        updated_at=now,
                        token=new_token(),
                        **({"error": None} if reopened else {}),
                    )
                )
                if history:
                    conn.execute(
                        insert(self.tables.history).values(
                            feed=feed,
                            partition_pk=row.pk,
                            event="enqueued",
                            from_version=row.version,
                            from_status=None if created else row.status,
                            to_status=status,
                            gate=target,
                            message=f"{len(new)} item(s) at gate {target}",
                            at=now,
                        )
                    )
            return EnqueueResult(row.pk, created, len(new), len(items) - len(new), target, reopened)

        for attempt in range(3):
            try:
                return self.transaction(work)
            except IntegrityError:
                # Another producer created the same partition or item at the same moment.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # -- reading ----------------------------------------------------------

    def _partition_columns(self) -> list[Any]:
        """The columns of :class:`PartitionRow`, in its order."""
        p = self.tables.partitions
        return [p.c[f.name] for f in dataclasses.fields(PartitionRow)]

    def partition(self, feed: str, partition: str) -> PartitionRow:
        p = self.tables.partitions
        row = self.transaction(
            lambda c: c.execute(
                select(*self._partition_columns()).where(p.c.feed == feed, p.c.id == partition)
            ).first(),
            readonly=True,
        )
        if row is None:
            raise PartitionNotFoundError(f"partition {partition!r} does not exist in feed {feed!r}")
        return PartitionRow(*row)

    def partitions(
        self, feed: str, *, status: str | None = None, after: str | None = None, limit: int = 1000
    ) -> list[PartitionRow]:
        p = self.tables.partitions
        query = select(*self._partition_columns()).where(p.c.feed == feed)
        if status:
            query = query.where(p.c.status == status)
        if after is not None:
            query = query.where(p.c.id > after)
        query = query.order_by(p.c.id).limit(limit)
        return self.transaction(lambda c: [PartitionRow(*r) for r in c.execute(query)], readonly=True)

    def items(
        self,
        partition_pk: int,
        *,
        gate: int | None = None,
        status: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[ItemRow]:
        i = self.tables.items
        query = select(
            i.c.pk,
            i.c.partition_pk,
            i.c.id,
            i.c.status,
            i.c.gate,
            i.c.version,
            i.c.data,
            i.c.content_type,
            i.c.attempts,
            i.c.failures,
            i.c.polls,
            i.c.unanswered,
            i.c.next_attempt_at,
            i.c.error,
            i.c.created_at,
            i.c.updated_at,
        ).where(i.c.partition_pk == partition_pk)
        if gate is not None:
            query = query.where(i.c.gate == gate)
        if status is not None:
            query = query.where(i.c.status == status)
        if after is not None:
            query = query.where(i.c.pk > after)
        query = query.order_by(i.c.pk).limit(limit)
        return self.transaction(lambda c: [ItemRow(*r) for r in c.execute(query)], readonly=True)  # type: ignore[call-arg]

    def summary(self, feed: str, partition: str, failed_limit: int = 20) -> PartitionSummary:
        part = self.partition(feed, partition)
        i = self.tables.items

        def work(conn: Connection) -> PartitionSummary:
            counts = conn.execute(
                select(i.c.status, i.c.gate, func.count())
                .where(i.c.partition_pk == part.pk)
                .group_by(i.c.status, i.c.gate)
            ).all()
            failed = conn.execute(
                select(i.c.id, i.c.gate, i.c.error)
                .where(i.c.partition_pk == part.pk, i.c.status == "failed")
                .order_by(i.c.pk)
                .limit(failed_limit)
            ).all()
            return PartitionSummary(
                part,
                {(s, g): int(n) for s, g, n in counts},
                [(f.id, int(f.gate), f.error) for f in failed],
            )

        return self.transaction(work, readonly=True)

    def feed_counts(self, feed: str) -> dict[str, int]:
        p = self.tables.partitions
        query = select(p.c.status, func.count()).where(p.c.feed == feed).group_by(p.c.status)
        return self.transaction(lambda c: {s: int(n) for s, n in c.execute(query)}, readonly=True)

    def backlog(self, feed: str, now: datetime, cap: int = 1_000_000) -> int:
        """Available items in available partitions, counted up to ``cap``."""
        p, i = self.tables.partitions, self.tables.items
        inner = (
            select(i.c.pk)
            .join(p, p.c.pk == i.c.partition_pk)
            .where(p.c.feed == feed, p.c.status == "available", i.c.status == "available")
            .limit(cap)
            .subquery()
        )
        return self.transaction(
            lambda c: int(c.execute(select(func.count()).select_from(inner)).scalar() or 0), readonly=True
        )

    def history(self, partition_pk: int, *, after: int = 0, limit: int = 10_000) -> list[HistoryRow]:
        h = self.tables.history
        query = (
            select(
                h.c.pk,
                h.c.partition_pk,
                h.c.item_pk,
                h.c.event,
                h.c.from_version,
                h.c.from_status,
                h.c.to_status,
                h.c.gate,
                h.c.attempt,
                h.c.owner,
                h.c.message,
                h.c.at,
            )
            .where(h.c.partition_pk == partition_pk, h.c.pk > after)
            .order_by(h.c.pk)
            .limit(limit)
        )
        return self.transaction(lambda c: [HistoryRow(*r) for r in c.execute(query)], readonly=True)  # type: ignore[call-arg]

    # -- user actions -----------------------------------------------------

    def redrive(self, feed: str, partition: str | None, now: datetime, history: bool) -> int:
        """Reset failed items (attempts to 0, history kept, due now), reopen, clear leases.

        Idempotent: a second call finds nothing failed. Failed items below the
        partition's gate (left behind under the ``skip`` policy) move the gate
        back down to them, so no available item sits below its gate.
        Returns the number of items reset.
        """
        p, i, h = self.tables.partitions, self.tables.items, self.tables.history

        def work(conn: Connection) -> int:
            query = select(p.c.pk, p.c.gate, p.c.version, p.c.status).where(p.c.feed == feed)
            if partition is not None:
                query = query.where(p.c.id == partition)
            else:
                # Per partition of this feed, one probe of the items' (partition_pk, status)
                # index: never a scan of every feed's items.
                has_failed = select(i.c.pk).where(i.c.partition_pk == p.c.pk, i.c.status == "failed").exists()
                query = query.where((p.c.status == "failed") | has_failed)
            parts = conn.execute(query.with_for_update()).all()
            if partition is not None and not parts:
                raise PartitionNotFoundError(f"partition {partition!r} does not exist in feed {feed!r}")
            total = 0
            for part in parts:
                failed = conn.execute(
                    select(i.c.pk, i.c.version, i.c.gate)
                    .where(i.c.partition_pk == part.pk, i.c.status == "failed")
                    .with_for_update()
                ).all()
                if not failed and part.status != "failed":
                    continue
                for start in range(0, len(failed), _CHUNK):
                    chunk = [f.pk for f in failed[start : start + _CHUNK]]
                    conn.execute(
                        update(i)
                        .where(i.c.pk.in_(bindparam("pks", expanding=True)), i.c.status == "failed")
                        .values(
                            status="available",
                            attempts=0,
                            failures=0,
                            polls=0,
                            unanswered=0,
                            claim_epoch=None,
                            next_attempt_at=now,
                            version=i.c.version + 1,
                            updated_at=now,
                            token=None,
                        ),
                        {"pks": chunk},
                    )
                gate = min([part.gate] + [f.gate for f in failed])
                conn.execute(
                    update(p)
                    .where(p.c.pk == part.pk, p.c.version == part.version)
                    .values(
                        status="available",
                        gate=gate,
                        error=None,
                        ready_at=now,
                        owner=None,
                        lease_until=None,
                        steal_by=None,
                        version=p.c.version + 1,
                        updated_at=now,
                        token=None,
                    )
                )
                if history:
                    rows: list[dict[str, Any]] = [
                        {
                            "feed": feed,
                            "partition_pk": part.pk,
                            "item_pk": f.pk,
                            "event": "redriven",
                            "from_version": f.version,
                            "from_status": "failed",
                            "to_status": "available",
                            "gate": f.gate,
                            "at": now,
                        }
                        for f in failed
                    ]
                    rows.append(
                        {
                            "feed": feed,
                            "partition_pk": part.pk,
                            "item_pk": None,
                            "event": "redriven",
                            "from_version": part.version,
                            "from_status": part.status,
                            "to_status": "available",
                            "gate": gate,
                            "at": now,
                            "message": f"{len(failed)} item(s) reset"
                            + (f"; gate moved {part.gate} -> {gate}" if gate != part.gate else ""),
                        }
                    )
                    conn.execute(insert(h), rows)
                total += len(failed)
            return total

        return self.transaction(work)

    def move_gate(self, feed: str, partition: str, gate: int, now: datetime, history: bool) -> int:
        """Move a partition's gate by hand (manual checkpoint); returns the old gate."""
        p, i = self.tables.partitions, self.tables.items

        def work(conn: Connection) -> int:
            part = conn.execute(
                select(p.c.pk, p.c.gate, p.c.version, p.c.status)
                .where(p.c.feed == feed, p.c.id == partition)
                .with_for_update()
            ).first()
            if part is None:
                raise PartitionNotFoundError(f"partition {partition!r} does not exist in feed {feed!r}")
            skipped = conn.execute(
                select(func.count()).where(
                    i.c.partition_pk == part.pk, i.c.status == "available", i.c.gate < gate
                )
            ).scalar()
            if skipped:
                raise GateError(
                    f"cannot move partition {partition!r} to gate {gate}: {skipped} available "
                    f"item(s) sit below it and would never run; move them or pick a lower gate"
                )
            conn.execute(
                update(p)
                .where(p.c.pk == part.pk, p.c.version == part.version)
                .values(gate=gate, version=p.c.version + 1, ready_at=now, updated_at=now, token=None)
            )
            if history:
                conn.execute(
                    insert(self.tables.history).values(
                        feed=feed,
                        partition_pk=part.pk,
                        event="gate_moved",
                        from_version=part.version,
                        from_status=part.status,
                        to_status=part.status,
                        gate=gate,
                        at=now,
                        message=f"gate {part.gate} -> {gate} by hand",
                    )
                )
            return int(part.gate)

        return self.transaction(work)

    def cancel(self, feed: str, partition: str, now: datetime, history: bool) -> int:
        """Fail a partition's open items and the partition itself ("cancelled"); re-drive undoes it."""
        p, i = self.tables.partitions, self.tables.items

        def work(conn: Connection) -> int:
            part = conn.execute(
                select(p.c.pk, p.c.gate, p.c.version, p.c.status)
                .where(p.c.feed == feed, p.c.id == partition)
                .with_for_update()
            ).first()
            if part is None:
                raise PartitionNotFoundError(f"partition {partition!r} does not exist in feed {feed!r}")
            count = conn.execute(
                update(i)
                .where(i.c.partition_pk == part.pk, i.c.status == "available")
                .values(
                    status="failed",
                    error="cancelled by user",
                    version=i.c.version + 1,
                    updated_at=now,
                    token=None,
                )
            ).rowcount
            conn.execute(
                update(p)
                .where(p.c.pk == part.pk)
                .values(
                    status="failed",
                    error="cancelled by user",
                    owner=None,
                    lease_until=None,
                    steal_by=None,
                    ready_at=None,
                    version=p.c.version + 1,
                    updated_at=now,
                )
            )
            if history:
                conn.execute(
                    insert(self.tables.history).values(
                        feed=feed,
                        partition_pk=part.pk,
                        event="cancelled",
                        from_version=part.version,
                        from_status=part.status,
                        to_status="failed",
                        gate=part.gate,
                        at=now,
                        message=f"{count} open item(s) cancelled",
                    )
                )
            return int(count)

        return self.transaction(work)

    def delete_partition(self, feed: str, partition: str) -> int:
        """Delete a partition, its items and its history; returns the items deleted."""
        p, i, h = self.tables.partitions, self.tables.items, self.tables.history

        def work(conn: Connection) -> int:
            pk = conn.execute(
                select(p.c.pk).where(p.c.feed == feed, p.c.id == partition).with_for_update()
            ).scalar()
            if pk is None:
                raise PartitionNotFoundError(f"partition {partition!r} does not exist in feed {feed!r}")
            count = conn.execute(delete(i).where(i.c.partition_pk == pk)).rowcount
            conn.execute(delete(h).where(h.c.partition_pk == pk))
            conn.execute(delete(p).where(p.c.pk == pk))
            return int(count)

        return self.transaction(work)

    def purge(self, feed: str, before: datetime, *, partitions: bool, history: bool) -> tuple[int, int]:
        """Delete complete partitions and history rows older than ``before``.

        Acknowledged work is never lost: an enqueue may reopen a complete
        partition at any moment, and purge must not delete one it reopened.
        The candidates are locked (``SELECT ... FOR UPDATE``, in pk order): an
        enqueue that locked a partition first makes purge wait and then see it
        open again (the lock re-reads the row), one that comes later waits for
        purge and then creates the partition anew. Each partition row is then
        deleted only if it is still complete at the version read, and its items
        and history go only with it. SQLite has one writer at a time (``BEGIN
        IMMEDIATE``), which gives the same.
        """
        p, i, h = self.tables.partitions, self.tables.items, self.tables.history
        expanding: Any = bindparam("pks", expanding=True)

        def work(conn: Connection) -> tuple[int, int]:
            removed = 0
            if partitions:
                candidates = conn.execute(
                    select(p.c.pk, p.c.version)
                    .where(p.c.feed == feed, p.c.status == "complete", p.c.updated_at < before)
                    .order_by(p.c.pk)
                    .with_for_update()
                ).all()
                for start in range(0, len(candidates), _CHUNK):
                    chunk = candidates[start : start + _CHUNK]
                    pks = {"pks": [c.pk for c in chunk]}
                    conn.execute(
                        delete(p).where(
                            tuple_(p.c.pk, p.c.version).in_([(c.pk, c.version) for c in chunk]),
                            p.c.status == "complete",
                        )
                    )
                    kept = {r[0] for r in conn.execute(select(p.c.pk).where(p.c.pk.in_(expanding)), pks)}
                    gone = {"pks": [c.pk for c in chunk if c.pk not in kept]}
                    if gone["pks"]:
                        conn.execute(delete(i).where(i.c.partition_pk.in_(expanding)), gone)
                        conn.execute(delete(h).where(h.c.partition_pk.in_(expanding)), gone)
                    removed += len(gone["pks"])
            rows = 0
            if history:
                rows = conn.execute(delete(h).where(h.c.feed == feed, h.c.at < before)).rowcount
            return removed, int(rows)

        return self.transaction(work)
