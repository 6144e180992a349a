"""Steering: what a user does to a partition by hand (re-drive, move the gate, cancel, delete, purge).

These writes override what the engine decided, so each locks the partition
rows it changes first and then bumps their version (or deletes them): an
owner's checkpoint decided before the user's change loses its write and
decides again, and the owner's next claim sees the new gate. Re-drive and
cancel also clear the lease, since the partition's state changes under its
owner.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, select, tuple_, update
from sqlalchemy.engine import Connection

from feedwatch.errors import GateError
from feedwatch.store.base import CHUNK, RELEASE, HistoryEvent, StoreBase, partition_not_found


class SteeringQueries(StoreBase):
    """User actions on partitions, each in one transaction."""

    def redrive(self, feed: str, partition: str | None, *, now: datetime, history: bool) -> int:
        """Reset failed items (attempts to 0, history kept, due now), reopen, clear leases.

        Idempotent: a second call finds nothing failed. Failed items below the
        partition's gate (left behind under the ``skip`` policy) move the gate
        back down to them, so no available item sits below its gate.
        Returns the number of items reset.
        """
        p, i = self.tables.partitions, self.tables.items

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
                raise partition_not_found(feed, partition)
            total = 0
            for part in parts:
                failed = conn.execute(
                    select(i.c.pk, i.c.version, i.c.gate)
                    .where(i.c.partition_pk == part.pk, i.c.status == "failed")
                    .with_for_update()
                ).all()
                if not failed and part.status != "failed":
                    continue
                for start in range(0, len(failed), CHUNK):
                    chunk = [f.pk for f in failed[start : start + CHUNK]]
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
                        **RELEASE,
                        version=p.c.version + 1,
                        updated_at=now,
                        token=None,
                    )
                )
                if history:
                    events: list[HistoryEvent] = [
                        {
                            "item_pk": f.pk,
                            "event": "redriven",
                            "from_version": f.version,
                            "from_status": "failed",
                            "to_status": "available",
                            "gate": f.gate,
                        }
                        for f in failed
                    ]
                    events.append(
                        {
                            "event": "redriven",
                            "from_version": part.version,
                            "from_status": part.status,
                            "to_status": "available",
                            "gate": gate,
                            "message": f"{len(failed)} item(s) reset"
                            + (f"; gate moved {part.gate} -> {gate}" if gate != part.gate else ""),
                        }
                    )
                    self.write_history(conn, feed, events, at=now, partition_pk=part.pk)
                total += len(failed)
            return total

        return self.transaction(work)

    def move_gate(self, feed: str, partition: str, gate: int, *, now: datetime, history: bool) -> int:
        """Move a partition's gate by hand (manual checkpoint); returns the old gate."""
        p, i = self.tables.partitions, self.tables.items

        def work(conn: Connection) -> int:
            part = self.lock_partition(conn, feed, partition, p.c.pk, p.c.gate, p.c.version, p.c.status)
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
                self.write_history(
                    conn,
                    feed,
                    [
                        {
                            "event": "gate_moved",
                            "from_version": part.version,
                            "from_status": part.status,
                            "to_status": part.status,
                            "gate": gate,
                            "message": f"gate {part.gate} -> {gate} by hand",
                        }
                    ],
                    at=now,
                    partition_pk=part.pk,
                )
            return int(part.gate)

        return self.transaction(work)

    def cancel(self, feed: str, partition: str, *, now: datetime, history: bool) -> int:
        """Fail a partition's open items and the partition itself ("cancelled"); re-drive undoes it."""
        p, i = self.tables.partitions, self.tables.items

        def work(conn: Connection) -> int:
            part = self.lock_partition(conn, feed, partition, p.c.pk, p.c.gate, p.c.version, p.c.status)
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
                    **RELEASE,
                    ready_at=None,
                    version=p.c.version + 1,
                    updated_at=now,
                )
            )
            if history:
                self.write_history(
                    conn,
                    feed,
                    [
                        {
                            "event": "cancelled",
                            "from_version": part.version,
                            "from_status": part.status,
                            "to_status": "failed",
                            "gate": part.gate,
                            "message": f"{count} open item(s) cancelled",
                        }
                    ],
                    at=now,
                    partition_pk=part.pk,
                )
            return int(count)

        return self.transaction(work)

    def delete_partition(self, feed: str, partition: str) -> int:
        """Delete a partition, its items and its history; returns the items deleted."""
        p, i, h = self.tables.partitions, self.tables.items, self.tables.history

        def work(conn: Connection) -> int:
            pk = self.lock_partition(conn, feed, partition, p.c.pk).pk
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
                for start in range(0, len(candidates), CHUNK):
                    chunk = candidates[start : start + CHUNK]
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
