"""Queries of the hot path: claiming items, committing results, checkpoints.

Claims and result commits are batched (one UPDATE for up to ``batch_size``
rows, each row fenced by its own version); the token each statement writes is
read back, so the engine knows exactly which rows it won.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exc, func, select
from sqlalchemy.engine import Connection

from feedwatch.errors import DatabaseUnavailableError
from feedwatch.store.base import RELEASE, HistoryTuple, Positional, StoreBase, bounded, new_token
from feedwatch.store.records import (
    CheckpointDecision,
    CheckpointPolicy,
    ClaimBatch,
    Claimed,
    ClaimRequest,
    FailedItem,
    GateDue,
    GateSnapshot,
    ItemOutcome,
)

log = logging.getLogger("feedwatch.store")

_RESULT_COLUMNS = (
    "pk",
    "version",
    "status",
    "gate",
    "set_data",
    "data",
    "error",
    "next_attempt_at",
    "failures",
    "polls",
)
_RESULT_CASTS = {
    "pk": "BIGINT",
    "version": "INTEGER",
    "status": "VARCHAR(16)",
    "gate": "INTEGER",
    "set_data": "INTEGER",
    "data": "BYTEA",
    "error": "TEXT",
    "next_attempt_at": "TIMESTAMP",
    "failures": "INTEGER",
    "polls": "INTEGER",
}
_PK_CASTS = {"pk": "BIGINT", "version": "INTEGER"}


def _result_assignments(table: str) -> list[tuple[str, str]]:
    """The columns a result writes, from the values row ``v`` (``data`` only when the answer set it)."""
    return [
        ("status", "v.status"),
        ("gate", "v.gate"),
        ("data", f"CASE WHEN v.set_data = 1 THEN v.data ELSE {table}.data END"),
        ("error", "v.error"),
        ("next_attempt_at", "v.next_attempt_at"),
        ("failures", "v.failures"),
        ("polls", "v.polls"),
        ("unanswered", "0"),
        ("claim_epoch", "NULL"),
        ("updated_at", ":now"),
    ]


class ProcessingQueries(StoreBase):
    def claim_items(
        self,
        feed: str,
        owner: str,
        partition_pk: int,
        *,
        epoch: int,
        gate: int,
        now: datetime,
        limit: int,
        max_unanswered: int,
        history: bool,
        suspects: bool = False,
    ) -> tuple[list[Claimed], int] | None:
        """:meth:`claim_batch` for one partition: ``None`` if ``owner`` lost it."""
        batch = self.claim_batch(
            feed,
            owner,
            [ClaimRequest(partition_pk, epoch, gate, limit)],
            now=now,
            max_unanswered=max_unanswered,
            history=history,
            suspects=suspects,
        )
        if partition_pk in batch.lost:
            return None
        return batch.claimed.get(partition_pk, []), batch.failed

    def claim_batch(
        self,
        feed: str,
        owner: str,
        requests: Sequence[ClaimRequest],
        *,
        now: datetime,
        max_unanswered: int,
        history: bool,
        suspects: bool = False,
        probe: Collection[int] = (),
    ) -> ClaimBatch:
        """Claim due items of several held partitions in one transaction, oldest first.

        Each partition gives up to its request's ``limit`` items at its gate (one
        index range per partition, read in a single UNION ALL statement; one
        UPDATE claims them all). A claim records the attempt (so a crash
        counts), the lease epoch (so the owner skips what it has in flight,
        while a new owner may take it) and bumps the version the result must
        carry. Items dispatched ``max_unanswered`` times without an answer
        fail here instead.

        Suspects (items that were in flight when a watcher died) are claimed
        only with ``suspects=True`` and then alone, which the engine asks for
        only when nothing else is in flight: a poison item that kills its
        watcher takes no innocent item down with it again. The partitions in
        ``probe`` (the engine's new leases) are looked at for suspects first;
        if one waits, nothing is claimed and ``suspects`` says where, so the
        engine stops claiming, drains what it has in flight and then runs the
        suspect: it waits for at most the longest call in flight.

        A partition whose gate is not the request's (moved by hand, or by a
        checkpoint) gives nothing and is reported in ``moved`` with its gate
        now, so the owner never dispatches a gate from memory once the move
        committed.
        """
        i, p = self.tables.items, self.tables.partitions
        wanted = {r.partition_pk: r for r in requests}

        def read(conn: Connection, suspect: bool, reqs: Sequence[ClaimRequest]) -> list[Any]:
            found: list[Any] = []
            for start in range(0, len(reqs), 50):  # bounded statement size
                chunk = reqs[start : start + 50]
                params: dict[str, Any] = {"now": self.ts(now)}
                for n, r in enumerate(chunk):
                    params.update({f"p{n}": r.partition_pk, f"g{n}": r.gate, f"e{n}": r.epoch})
                    params[f"l{n}"] = 1 if suspect else r.limit + 1  # one more: is the gate drained?
                found += self.run(conn, self._claim_sql(len(chunk), suspect), params).all()
            return found

        def work(conn: Connection) -> ClaimBatch:
            held = {
                row.pk: row.gate
                for row in conn.execute(
                    select(p.c.pk, p.c.gate).where(
                        p.c.pk.in_(bindparam("pks", expanding=True)), p.c.owner == owner
                    ),
                    {"pks": list(wanted)},
                )
            }
            result = ClaimBatch(lost=set(wanted) - set(held))
            result.moved = {pk: gate for pk, gate in held.items() if gate != wanted[pk].gate}
            reqs = [r for r in requests if r.partition_pk in held and r.partition_pk not in result.moved]
            if not reqs:
                return result
            rows: Sequence[Any] = []
            looked = reqs if suspects else [r for r in reqs if r.partition_pk in probe]
            if looked:
                found = read(conn, True, looked)  # at most one suspect per partition
                if not suspects:
                    result.suspects = {r.partition_pk for r in found}
                    if found:
                        return result  # the engine drains first, then claims the suspect alone
                else:
                    rows = found[:1]
                    spent = {r.partition_pk for r in rows if r.unanswered >= max_unanswered}
                    # There may be more suspects behind the one taken (or failed) here.
                    result.suspects = {r.partition_pk for r in found[1:]} | spent
            if not rows:
                asked = {r.partition_pk: r for r in reqs}
                rows, result.exhausted = _within_limits(read(conn, False, reqs), asked)
            if not rows:
                return result
            dead = [r for r in rows if r.unanswered >= max_unanswered]
            live = [r for r in rows if r.unanswered < max_unanswered]
            token = new_token()
            won = self.write_rows(
                conn,
                i,
                assignments=[
                    ("attempts", f"{i.name}.attempts + 1"),
                    ("unanswered", f"{i.name}.unanswered + 1"),
                    ("claim_epoch", "v.epoch"),
                    ("updated_at", ":now"),
                ],
                columns=("pk", "version", "epoch"),
                rows=[(r.pk, r.version, wanted[r.partition_pk].epoch) for r in live],
                casts={**_PK_CASTS, "epoch": "INTEGER"},
                params={"now": self.ts(now)},
                token=token,
            )
            dead_won: set[int] = set()
            if dead:
                dead_won = self.write_rows(
                    conn,
                    i,
                    assignments=[("status", "'failed'"), ("error", ":error"), ("updated_at", ":now")],
                    columns=("pk", "version"),
                    rows=[(r.pk, r.version) for r in dead],
                    casts=_PK_CASTS,
                    params={
                        "error": f"dispatched {max_unanswered} times without an answer: "
                        "its watcher died, hung or lost the lease during each attempt",
                        "now": self.ts(now),
                    },
                    token=token,
                )
            events: list[HistoryTuple] = []
            for pk, partition_pk, id_, gate, version, attempts, failures, polls, unanswered, data, ct in live:
                if pk not in won:
                    continue
                claimed = Claimed(
                    pk=pk,
                    id=id_,
                    gate=gate,
                    version=version + 1,
                    attempt=attempts + 1,
                    failures=failures,
                    polls=polls,
                    data=data,
                    content_type=ct,
                    suspect=unanswered > 0,
                )
                result.claimed.setdefault(partition_pk, []).append(claimed)
                events.append(
                    (
                        partition_pk,
                        pk,
                        "dispatched",
                        version,
                        "available",
                        "available",
                        gate,
                        attempts + 1,
                        owner,
                        None,
                    )
                )
            for r in dead:
                if r.pk in dead_won:
                    events.append(
                        (r.partition_pk, r.pk, "failed", r.version, "available", "failed", r.gate, r.attempts,
                         owner, "never answered")
                    )  # fmt: skip
            result.failed = len(dead_won)
            if history:
                self.insert_history(conn, feed, events, at=now)
            return result

        return self.transaction(work)

    @functools.lru_cache(maxsize=128)  # noqa: B019 - one store per process; keys are small
    def _claim_sql(self, count: int, suspect: bool) -> Positional:
        """Due items of ``count`` partitions, each an index range with its own LIMIT, in one statement."""
        name = self.tables.items.name
        parts = [
            f"SELECT pk, partition_pk, id, gate, version, attempts, failures, polls, "
            f"unanswered, data, content_type FROM {name} WHERE partition_pk = :p{n} "
            f"AND status = 'available' AND gate = :g{n} AND next_attempt_at <= :now "
            f"AND (claim_epoch IS NULL OR claim_epoch < :e{n}) "
            f"AND unanswered {'>' if suspect else '='} 0 ORDER BY pk LIMIT :l{n}"
            for n in range(count)
        ]
        return self.positional(self._union_of_ranges(parts))

    def _union_of_ranges(self, members: list[str]) -> str:
        """SELECTs that each carry their own ORDER BY and LIMIT, as one UNION ALL statement."""
        if self.dialect == "sqlite":  # SQLite takes ORDER BY/LIMIT only in a subquery
            return " UNION ALL ".join(f"SELECT * FROM ({member}) AS s{n}" for n, member in enumerate(members))
        # MariaDB and PostgreSQL: parenthesised members (a derived table per member cost
        # MariaDB eight times the CPU, and once crashed it)
        return " UNION ALL ".join(f"({member})" for member in members)

    def commit_results(
        self,
        feed: str,
        owner: str,
        outcomes: list[ItemOutcome],
        *,
        now: datetime,
        history: bool,
        token: str | None = None,
        retrying: bool = False,
        checkpoint: CheckpointPolicy | None = None,
        emptying: Collection[int] | None = None,
    ) -> CommitReport:
        """Write a batch of results; report the rows won, the rows refused and what was decided.

        A result whose item changed since its claim (another watcher took the
        partition and re-claimed it, or a user re-drove it) loses and is
        discarded. If the connection breaks during COMMIT, the outcome is
        resolved by reading the token back: nothing is applied twice. A caller
        that retries a failed batch passes the same ``token`` and ``retrying``,
        so the rows of an earlier attempt that did land are recognised as its
        own, and the rest is written now.

        A batch that fails for its data (a value out of a column's range, a
        string the column cannot hold) is split in halves, recursively, so only
        the offending rows are refused (``rejected``: pk -> the database's
        reason) and every other row commits. Retrying the same rows could never
        help, so a refusal is the caller's to turn into that item's failure.
        Connection and transient errors are raised; every part of a split
        writes the same ``token``, so a retry of the whole batch still
        recognises what landed.

        With ``checkpoint``, every partition whose last available item at its
        gate the batch answered (the fan-in point) is decided in the same
        transaction, as :meth:`evaluate_checkpoint` would (``decisions``), so
        the next gate's claim needs no checkpoint round trip. ``emptying``
        narrows the partitions looked at to those the caller expects the batch
        may empty (default: every partition of the batch).
        """
        i = self.tables.items
        token = token or new_token()
        report = CommitReport()

        def write(part: list[ItemOutcome], again: bool) -> set[int]:
            """One transaction for ``part``; what an earlier attempt landed is read back first."""
            landed: set[int] = set()
            if again:
                pks = [o.pk for o in part]
                landed = self.transaction(lambda c: self.read_token(c, i, pks, token))
                if landed:
                    log.info("an earlier attempt of this batch was committed (%d rows)", len(landed))
                    part = [o for o in part if o.pk not in landed]
                    if not part:
                        return landed
            rows = [
                (o.pk, o.version, o.status, o.gate, 1 if o.set_data else 0, o.data,
                 _storable_text(o.error), o.next_attempt_at, o.failures, o.polls)
                for o in part
            ]  # fmt: skip

            def work(conn: Connection) -> tuple[set[int], dict[int, CheckpointDecision]]:
                won = self.write_rows(
                    conn,
                    i,
                    assignments=_result_assignments(i.name),
                    columns=_RESULT_COLUMNS,
                    rows=rows,
                    casts=_RESULT_CASTS,
                    params={"now": self.ts(now)},
                    token=token,
                )
                if history:
                    self.insert_history(
                        conn,
                        feed,
                        [
                            (o.partition_pk, o.pk, o.kind, o.version, "available", o.status, o.gate,
                             o.attempt, owner, _storable_text(o.error))
                            for o in part
                            if o.pk in won
                        ],
                        at=now,
                    )  # fmt: skip
                decided: dict[int, CheckpointDecision] = {}
                if checkpoint is not None and won:
                    touched = {o.partition_pk for o in part if o.pk in won}
                    if emptying is not None:
                        touched &= set(emptying)
                    if touched and (emptied := self._emptied(conn, owner, touched)):
                        decided = self._checkpoints(
                            conn,
                            feed,
                            owner,
                            emptied,
                            now=now,
                            policy=checkpoint,
                            history=history,
                            emptied_only=True,
                        )
                return won, decided

            try:
                won, decided = self.transaction(work)
            except DatabaseUnavailableError:
                # The COMMIT may or may not have reached the database: ask it. What a
                # checkpoint decided then is unknown: the owner's next claim finds out.
                pks = [o.pk for o in part]
                won = self.transaction(lambda c: self.read_token(c, i, pks, token))
                if won:
                    log.info("ambiguous commit resolved as applied (%d rows)", len(won))
                    return landed | won
                raise
            report.decisions.update(decided)
            return landed | won

        def attempt(part: list[ItemOutcome], again: bool) -> None:
            try:
                report.won |= write(part, again)
            except Exception as error:
                if not is_data_error(error):
                    raise
                if len(part) == 1:
                    report.rejected[part[0].pk] = refusal(error)
                    log.warning("the database refused the result of item %d: %s", part[0].pk, refusal(error))
                    return
                middle = len(part) // 2
                # A retry reads the token first in each half too: rows that
                # landed in an earlier attempt must not be written (nor their
                # history) twice.
                attempt(part[:middle], again)
                attempt(part[middle:], again)

        if outcomes:
            attempt(outcomes, retrying)
        return report

    def evaluate_checkpoint(
        self,
        feed: str,
        owner: str,
        partition_pk: int,
        *,
        now: datetime,
        auto_close: bool,
        manual_checkpoint: bool,
        failure_policy: str,
        history: bool,
        hold_for: float,
        rule: Callable[[GateSnapshot], CheckpointDecision],
    ) -> CheckpointDecision:
        """Decide what the partition does next, and write it fenced by the version read.

        Called when the owner found nothing to claim at the current gate. The
        partition row is read (and locked) first, so an enqueue that commits
        while we decide bumps the version and makes our write lose: the caller
        then evaluates again with fresh knowledge. The decision is ``rule``'s,
        a pure function of what was read (the engine's gate rule,
        ``feedwatch.engine.gating.next_step``: the store imports no engine).
        """
        policy = CheckpointPolicy(auto_close, manual_checkpoint, failure_policy, hold_for, rule)
        return self.transaction(
            lambda conn: self._checkpoints(
                conn, feed, owner, [partition_pk], now=now, policy=policy, history=history
            )[partition_pk]
        )

    def _checkpoints(
        self,
        conn: Connection,
        feed: str,
        owner: str,
        partition_pks: Collection[int],
        *,
        now: datetime,
        policy: CheckpointPolicy,
        history: bool,
        emptied_only: bool = False,
    ) -> dict[int, CheckpointDecision]:
        """Lock the partitions, read their snapshots, let ``policy.rule`` decide, write the decisions.

        Set-based: a statement per step for all the partitions, not per
        partition (a commit that empties 25 gates decided them in 125 round
        trips before, and took 0.3 s where its neighbours took 0.07 s). With
        ``emptied_only``, a partition whose gate holds an available item again
        (enqueued since the caller looked) is left out: no decision is due.
        """
        p, i = self.tables.partitions, self.tables.items
        pks = sorted(partition_pks)
        rows = conn.execute(
            select(p.c.pk, p.c.gate, p.c.version, p.c.status, p.c.owner)
            .where(p.c.pk.in_(pks))
            .order_by(p.c.pk)
            .with_for_update()
        ).all()
        parts = {r.pk: r for r in rows if r.owner == owner and r.status == "available"}
        gates = {r.pk: r.gate for r in rows}
        decisions = {pk: CheckpointDecision("lost", gates.get(pk, 0)) for pk in pks if pk not in parts}
        if not parts:
            return decisions
        available: dict[int, list[GateDue]] = {pk: [] for pk in parts}
        for pk, gate, due in conn.execute(
            select(i.c.partition_pk, i.c.gate, func.min(i.c.next_attempt_at))
            .where(i.c.partition_pk.in_(list(parts)), i.c.status == "available")
            .group_by(i.c.partition_pk, i.c.gate)
            .order_by(i.c.partition_pk, i.c.gate)
        ):
            available[pk].append(GateDue(gate, due))
        if emptied_only:
            parts = {pk: r for pk, r in parts.items() if all(a.gate != r.gate for a in available[pk])}
            if not parts:
                return decisions
        failed = self._first_failed(conn, list(parts))
        writes: dict[int, CheckpointDecision] = {}
        for pk, part in parts.items():
            decision = policy.rule(
                GateSnapshot(
                    gate=part.gate,
                    now=now,
                    available=tuple(available[pk]),
                    failed=failed.get(pk),
                    auto_close=policy.auto_close,
                    manual_checkpoint=policy.manual_checkpoint,
                    failure_policy=policy.failure_policy,
                    hold_for=policy.hold_for,
                )
            )
            if decision.action in ("work", "held", "lost"):
                decisions[pk] = decision  # nothing to write
            else:
                message = bounded(decision.message) if decision.action == "failed" else decision.message
                ready_at = decision.ready_at if decision.action in ("advanced", "waiting") else None
                writes[pk] = CheckpointDecision(decision.action, decision.gate, ready_at, message)
        versions = {pk: part.version for pk, part in parts.items()}
        decisions.update(self._write_decisions(conn, feed, owner, versions, writes, now=now, history=history))
        return decisions

    def _first_failed(self, conn: Connection, partition_pks: list[int]) -> dict[int, FailedItem]:
        """Each partition's first failed item (lowest gate, then oldest): one index range apiece."""
        found: dict[int, FailedItem] = {}
        name = self.tables.items.name
        for start in range(0, len(partition_pks), 50):  # bounded statement size
            chunk = partition_pks[start : start + 50]
            parts = [
                f"SELECT partition_pk, id, gate, error FROM {name} WHERE partition_pk = :p{n} "
                f"AND status = 'failed' ORDER BY gate, pk LIMIT 1"
                for n in range(len(chunk))
            ]
            statement = self.positional(self._union_of_ranges(parts))
            for pk, item, gate, error in self.run(
                conn, statement, {f"p{n}": pk for n, pk in enumerate(chunk)}
            ):
                found[pk] = FailedItem(item, gate, error)
        return found

    def _write_decisions(
        self,
        conn: Connection,
        feed: str,
        owner: str,
        versions: dict[int, int],
        decisions: dict[int, CheckpointDecision],
        *,
        now: datetime,
        history: bool,
    ) -> dict[int, CheckpointDecision]:
        """Write each decision to its partition (one UPDATE per kind), fenced by the version read.

        A partition whose version moved since (an enqueue committed between the
        read and the write) loses: ``lost``, and no history.
        """
        p = self.tables.partitions
        won: set[int] = set()
        token = new_token()
        for action in sorted({d.action for d in decisions.values()}):
            group = [(pk, d) for pk, d in decisions.items() if d.action == action]
            assignments, varying = _decision_columns(action)
            won |= self.write_rows(
                conn,
                p,
                assignments=[*assignments, ("updated_at", ":now")],
                columns=("pk", "version", *varying),
                rows=[
                    (pk, versions[pk], *(_decision_value(d, column) for column in varying)) for pk, d in group
                ],
                casts={**_PK_CASTS, **{c: _DECISION_CASTS[c] for c in varying}},
                params={"now": self.ts(now)},
                token=token,
            )
        result = {pk: d if pk in won else CheckpointDecision("lost", d.gate) for pk, d in decisions.items()}
        if history:
            self.write_history(
                conn,
                feed,
                [
                    {
                        "partition_pk": pk,
                        "event": _DECISION_EVENTS[d.action],
                        "from_version": versions[pk],
                        "from_status": "available",
                        "to_status": _DECISION_STATUS.get(d.action, "available"),
                        "gate": d.gate,
                        "message": d.message,
                    }
                    for pk, d in decisions.items()
                    if pk in won
                ],
                at=now,
                owner=owner,
            )
        return result

    def _emptied(self, conn: Connection, owner: str, partition_pks: Collection[int]) -> list[int]:
        """Of ``partition_pks``, those still ours with no available item left at their gate.

        Items in flight are still ``available`` (claimed), so a partition shows
        here only once the last result at its gate is written: the fan-in point.
        """
        p, i = self.tables.partitions, self.tables.items
        left = (
            select(i.c.pk)
            .where(i.c.partition_pk == p.c.pk, i.c.status == "available", i.c.gate == p.c.gate)
            .exists()
        )
        rows = conn.execute(
            select(p.c.pk)
            .where(p.c.pk.in_(sorted(partition_pks)), p.c.owner == owner, p.c.status == "available", ~left)
            .order_by(p.c.pk)
        )
        return [pk for (pk,) in rows]


def _within_limits(rows: Sequence[Any], wanted: dict[int, ClaimRequest]) -> tuple[list[Any], set[int]]:
    """Each partition's first ``limit`` rows, read with one more; the partitions that had no more."""
    kept: list[Any] = []
    counts: dict[int, int] = {}
    for row in rows:
        seen = counts[row.partition_pk] = counts.get(row.partition_pk, 0) + 1
        if seen <= wanted[row.partition_pk].limit:
            kept.append(row)
    exhausted = {pk for pk in wanted if counts.get(pk, 0) <= wanted[pk].limit}
    return kept, exhausted


#: The history event each written checkpoint decision leaves.
_DECISION_EVENTS = {
    "waiting": "lease_released",
    "idle": "lease_released",
    "advanced": "gate_advanced",
    "failed": "partition_failed",
    "completed": "partition_completed",
}
#: The partition status a decision leaves, where it is not ``available``.
_DECISION_STATUS = {"failed": "failed", "completed": "complete"}
_DECISION_CASTS = {"gate": "INTEGER", "ready_at": "TIMESTAMP", "error": "TEXT"}
#: The lease columns a decision that lets the partition go clears (``base.RELEASE``).
_RELEASED = [(column, "NULL") for column in RELEASE]


def _decision_columns(action: str) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """The partition columns a checkpoint decision writes, and which of them vary by partition."""
    match action:
        case "advanced":
            return [("gate", "v.gate"), ("ready_at", "v.ready_at")], ("gate", "ready_at")
        case "waiting":
            return [("ready_at", "v.ready_at"), *_RELEASED], ("ready_at",)
        case "failed":
            return [("status", "'failed'"), ("error", "v.error"), ("ready_at", "NULL"), *_RELEASED], (
                "error",
            )
        case "completed":
            return [("status", "'complete'"), ("ready_at", "NULL"), ("error", "NULL"), *_RELEASED], ()
        case _:  # idle
            return [("ready_at", "NULL"), *_RELEASED], ()


def _decision_value(decision: CheckpointDecision, column: str) -> Any:
    return {"gate": decision.gate, "ready_at": decision.ready_at, "error": decision.message}[column]


@dataclass
class CommitReport:
    """What a batch of results became: the rows won, and the rows the database refused."""

    won: set[int] = field(default_factory=set)
    #: pk -> why the database refused the row (its own message, one line).
    rejected: dict[int, str] = field(default_factory=dict)
    #: partition pk -> the checkpoint decided in the commit (the gate it emptied).
    decisions: dict[int, CheckpointDecision] = field(default_factory=dict)


def is_data_error(error: BaseException) -> bool:
    """The database (or its driver) refused the values, not the connection.

    ``DataError`` (a number out of a column's range: MariaDB 1264, PostgreSQL
    22003 ``NumericValueOutOfRange``, a NUL in PostgreSQL text),
    ``IntegrityError``, and what drivers raise while binding a value
    (SQLite's ``OverflowError: Python int too large to convert to SQLite
    INTEGER``, an encoding ``ValueError``). Retrying the same rows cannot help.
    """
    if isinstance(error, exc.DataError | exc.IntegrityError):
        return True
    if isinstance(error, exc.DBAPIError):
        return False
    if isinstance(error, exc.StatementError) and error.orig is not None:
        error = error.orig
    return isinstance(error, OverflowError | ValueError | TypeError)


def refusal(error: BaseException) -> str:
    """The database's reason for refusing a row, in one line."""
    cause = getattr(error, "orig", None) or error
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    text = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    return text if len(text) <= 300 else text[:300] + "..."


def _storable_text(message: str | None) -> str | None:
    """A message every database stores: bounded, valid UTF-8, no NUL (PostgreSQL refuses it)."""
    if message is None:
        return None
    clean = message.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")
    return bounded(clean)
