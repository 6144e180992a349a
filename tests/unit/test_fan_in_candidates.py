"""Which partitions a result batch asks the store to check for a fan-in point."""

from __future__ import annotations

from datetime import datetime

import pytest

from feedwatch.engine.dispatching import Dispatcher
from feedwatch.engine.leases import Lease
from feedwatch.store.records import Claimed, ItemOutcome

pytestmark = pytest.mark.unit


def _result(lease: Lease, pk: int) -> tuple[Lease, Claimed, ItemOutcome]:
    claimed = Claimed(
        pk=pk, id=f"i{pk}", gate=0, version=1, attempt=1, failures=0, polls=0, data=None, content_type=""
    )
    outcome = ItemOutcome(
        pk=pk, partition_pk=lease.pk, version=1, kind="complete", status="complete", gate=0,
        next_attempt_at=datetime(2026, 1, 1), failures=0, polls=0, attempt=1,
    )  # fmt: skip
    return lease, claimed, outcome


@pytest.mark.parametrize(
    ("drained", "in_flight", "answered", "candidate"),
    [
        (True, 2, 2, True),  # the last claim came up short and both results are here
        (True, 3, 2, False),  # a third item of it is still running
        (False, 2, 2, False),  # the last claim was full: more may be due at the gate
    ],
)
def test_a_partition_is_a_candidate_when_drained_with_its_last_results_in_the_batch(
    drained: bool, in_flight: int, answered: int, candidate: bool
) -> None:
    lease = Lease(pk=7, id="p", gate=0, epoch=1, trusted_until=1e9, in_flight=in_flight, drained=drained)
    other = Lease(pk=8, id="q", gate=0, epoch=1, trusted_until=1e9, in_flight=5, drained=True)
    batch = [_result(lease, n) for n in range(answered)] + [_result(other, 100)]
    assert Dispatcher._fan_in_candidates(batch) == ({7} if candidate else set())
