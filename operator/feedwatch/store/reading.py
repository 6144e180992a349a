"""Reading: partitions, items, counts and history as the producer API and the CLI show them.

Every query here is read-only (``readonly=True``: no write lock on SQLite) and
paginated or capped, so a large feed costs a bounded amount per call.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from feedwatch.store.base import StoreBase, partition_not_found
from feedwatch.store.records import HistoryRow, ItemRow, PartitionRow, PartitionSummary


class ReadingQueries(StoreBase):
    """Read-only queries over partitions, items and history."""

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
            raise partition_not_found(feed, partition)
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

    def summary(self, feed: str, partition: str, *, failed_limit: int = 20) -> PartitionSummary:
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

    def backlog(self, feed: str, now: datetime, *, cap: int = 1_000_000) -> int:
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
