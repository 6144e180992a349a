"""Enqueueing: the producer's one write, adding items to a partition.

It has a module of its own because it is the only write that runs against the
engine rather than for it: it must never cost an owner its lease (it bumps
the partition's version, which fences checkpoint decisions, not leases), it
must be idempotent per item id and payload, and it may reopen a complete
partition that purge is about to delete (see :meth:`SteeringQueries.purge`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from feedwatch.errors import ConflictError, GateError
from feedwatch.store.base import CHUNK, StoreBase, new_token
from feedwatch.store.dialects import MysqlLiterals, driver_text, pg_array

#: The items columns an enqueue writes, in the order of ``_insert_items``' VALUES.
_ITEM_COLUMNS = (
    "partition_pk", "id", "status", "gate", "version", "data", "content_type", "input_hash",
    "attempts", "failures", "polls", "unanswered", "next_attempt_at", "created_at", "updated_at",
)  # fmt: skip
#: Payload bytes per INSERT statement, at most (a single larger item goes alone).
_STATEMENT_BYTES = 1 << 20


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


class EnqueueQueries(StoreBase):
    """Adding items to partitions (created on first use)."""

    def enqueue(
        self,
        feed: str,
        partition: str,
        items: Sequence[NewItem],
        *,
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
            for start in range(0, 0 if created else len(ids), CHUNK):
                existing.update(
                    conn.execute(
                        select(i.c.id, i.c.input_hash).where(
                            i.c.partition_pk == row.pk,
                            i.c.id.in_(bindparam("ids", expanding=True)),
                        ),
                        {"ids": ids[start : start + CHUNK]},
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
            self._insert_items(conn, row.pk, new, gate=target, due=due, now=now)
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
                    self.write_history(
                        conn,
                        feed,
                        [
                            {
                                "event": "enqueued",
                                "from_version": row.version,
                                "from_status": None if created else row.status,
                                "to_status": status,
                                "gate": target,
                                "message": f"{len(new)} item(s) at gate {target}",
                            }
                        ],
                        at=now,
                        partition_pk=row.pk,
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

    def _insert_items(
        self,
        conn: Connection,
        partition_pk: int,
        new: Sequence[NewItem],
        *,
        gate: int,
        due: datetime,
        now: datetime,
    ) -> None:
        """Insert new items with the values every row shares bound once per statement.

        A row's own values are its id, payload, content type and hash; the
        partition, gate and timestamps are one parameter each. PostgreSQL gets
        the rows as four arrays (``unnest``); MariaDB a multi-row INSERT with
        the values written in by :class:`MysqlLiterals` (PyMySQL's escaping of
        every value was most of a large enqueue's time); SQLite, the driver's
        executemany.
        """
        if not new:
            return
        table, columns = self.tables.items.name, ", ".join(_ITEM_COLUMNS)
        shared = {"pk": partition_pk, "gate": gate, "due": self.ts(due), "now": self.ts(now)}
        if self.dialect == "postgresql":
            statement = self.positional(
                f"INSERT INTO {table} ({columns}) SELECT :pk, u.id, 'available', :gate, 0, u.data, u.ct, "
                "u.hash, 0, 0, 0, 0, :due, :now, :now FROM unnest(CAST(:ids AS VARCHAR[]), "
                "CAST(:datas AS BYTEA[]), CAST(:cts AS VARCHAR[]), CAST(:hashes AS VARCHAR[])) "
                "AS u(id, data, ct, hash)"
            )
            for chunk in _chunks(new):
                arrays = {
                    "ids": pg_array([it.id for it in chunk]),
                    "datas": pg_array([it.data for it in chunk]),
                    "cts": pg_array([it.content_type for it in chunk]),
                    "hashes": pg_array([it.input_hash for it in chunk]),
                }
                self.run(conn, statement, {**shared, **arrays})
        elif self.dialect == "mysql":
            literal = MysqlLiterals(conn)
            pk, shared_gate, due_at, now_at = literal(partition_pk), literal(gate), literal(due), literal(now)
            for chunk in _chunks(new):
                rows = ", ".join(
                    f"({pk}, {literal(it.id)}, 'available', {shared_gate}, 0, {literal(it.data)}, "
                    f"{literal(it.content_type)}, {literal(it.input_hash)}, 0, 0, 0, 0, {due_at}, {now_at}, "
                    f"{now_at})"
                    for it in chunk
                )
                conn.exec_driver_sql(driver_text(f"INSERT INTO {table} ({columns}) VALUES {rows}"))
        else:
            conn.exec_driver_sql(
                f"INSERT INTO {table} ({columns}) VALUES "
                "(?, ?, 'available', ?, 0, ?, ?, ?, 0, 0, 0, 0, ?, ?, ?)",
                [
                    (partition_pk, it.id, gate, it.data, it.content_type, it.input_hash,
                     shared["due"], shared["now"], shared["now"])
                    for it in new
                ],
            )  # fmt: skip


def _chunks(new: Sequence[NewItem]) -> Iterator[Sequence[NewItem]]:
    """Up to ``CHUNK`` items and about ``_STATEMENT_BYTES`` of payload at a time (one large item alone)."""
    start = 0
    while start < len(new):
        end, size = start, 0
        while end < len(new) and end - start < CHUNK and (end == start or size < _STATEMENT_BYTES):
            size += len(new[end].data or b"") + len(new[end].id)
            end += 1
        yield new[start:end]
        start = end
