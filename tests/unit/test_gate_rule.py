"""The gate rule, one row per branch: a partition's snapshot in, its next step out.

:func:`feedwatch.engine.gating.next_step` is what the store calls inside a
checkpoint's transaction; the store suite shows the decisions written on the
three databases, these rows show every way to reach each one.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from feedwatch.engine.gating import next_step
from feedwatch.store.records import CheckpointDecision, FailedItem, GateDue, GateSnapshot

pytestmark = pytest.mark.unit
NOW = datetime(2026, 1, 1)
SOON = NOW + timedelta(seconds=5)
LATER = NOW + timedelta(seconds=60)
PAST = NOW - timedelta(seconds=60)
#: A partition at gate 2, nothing left anywhere, default rules (auto-close, block, hold for 10 s).
EMPTY = GateSnapshot(
    gate=2,
    now=NOW,
    available=(),
    failed=None,
    auto_close=True,
    manual_checkpoint=False,
    failure_policy="block",
    hold_for=10.0,
)
BROKEN_AT_2 = FailedItem("bad", 2, "boom")
BROKEN_AT_5 = FailedItem("bad", 5, "boom")


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        pytest.param(
            replace(EMPTY, available=(GateDue(2, PAST), GateDue(3, PAST))),
            CheckpointDecision("work", 2, PAST),
            id="items due at the gate: work",
        ),
        pytest.param(
            replace(EMPTY, available=(GateDue(2, NOW),)),
            CheckpointDecision("work", 2, NOW),
            id="an item due this instant: work",
        ),
        pytest.param(
            replace(EMPTY, available=(GateDue(2, SOON),)),
            CheckpointDecision("held", 2, SOON),
            id="the next item due within hold_for: held",
        ),
        pytest.param(
            replace(EMPTY, available=(GateDue(2, LATER),), failed=BROKEN_AT_2),
            CheckpointDecision("waiting", 2, LATER),
            id="the next item due later: released until then, even with a failed item",
        ),
        pytest.param(
            replace(EMPTY, failed=BROKEN_AT_2),
            CheckpointDecision("failed", 2, None, "item 'bad' failed at gate 2: boom"),
            id="block: a failed item at the gate fails the partition",
        ),
        pytest.param(
            replace(EMPTY, gate=6, available=(GateDue(7, PAST),), failed=BROKEN_AT_5),
            CheckpointDecision("failed", 6, None, "item 'bad' failed at gate 5: boom"),
            id="block: a gate moved past a failed item still fails",
        ),
        pytest.param(
            replace(EMPTY, available=(GateDue(4, PAST), GateDue(7, PAST)), failed=BROKEN_AT_5),
            CheckpointDecision("advanced", 4, NOW, "gate 2 -> 4"),
            id="block: a failed item at a later gate waits for its turn",
        ),
        pytest.param(
            replace(EMPTY, failed=BROKEN_AT_5),
            CheckpointDecision("failed", 2, None, "item 'bad' failed at gate 5: boom"),
            id="block: nothing left but a failed item ahead fails",
        ),
        pytest.param(
            replace(EMPTY, failed=BROKEN_AT_2, failure_policy="skip"),
            CheckpointDecision("completed", 2),
            id="skip: a failed item does not stop the partition",
        ),
        pytest.param(
            replace(EMPTY, available=(GateDue(3, LATER), GateDue(9, PAST))),
            CheckpointDecision("advanced", 3, LATER, "gate 2 -> 3"),
            id="advance to the lowest later gate, ready when its first item is due",
        ),
        pytest.param(
            replace(EMPTY, available=(GateDue(3, PAST),)),
            CheckpointDecision("advanced", 3, NOW, "gate 2 -> 3"),
            id="advance: ready now at the latest",
        ),
        pytest.param(
            replace(EMPTY, available=(GateDue(3, PAST),), manual_checkpoint=True),
            CheckpointDecision("idle", 2, None, "gate 2 done; manual checkpoint waits for the producer"),
            id="manual checkpoint: idle at the gate, the producer moves it",
        ),
        pytest.param(EMPTY, CheckpointDecision("completed", 2), id="nothing left, auto-close: complete"),
        pytest.param(
            replace(EMPTY, auto_close=False),
            CheckpointDecision("idle", 2),
            id="nothing left, no auto-close: idle",
        ),
    ],
)
def test_next_step(snapshot: GateSnapshot, expected: CheckpointDecision) -> None:
    assert next_step(snapshot) == expected
