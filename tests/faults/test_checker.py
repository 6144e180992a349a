"""The checker of the fault suite, fed broken histories and logs: it must fail on each.

A checker that cannot fail proves nothing; each test here breaks one promise
and expects the checker to name it, after a clean control passes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from feedwatch import Feed, Store, migrate
from feedwatch.testing import check_history, check_invariants
from tests.support.fault_checks import (
    Call,
    Event,
    Expected,
    State,
    check_calls,
    check_gate_history,
    check_outcomes,
    check_results_came_from_calls,
    check_single_completion,
    verify,
)

pytestmark = pytest.mark.faults

# -- feedwatch.testing.check_history: (partition_pk, item_pk, event, from_version, gate) ------

CLEAN = [
    (1, None, "enqueued", 0, 0),
    (1, 10, "dispatched", 0, 0),
    (1, 10, "gate", 1, 1),
    (1, None, "gate_advanced", 1, 1),
    (1, 10, "dispatched", 2, 1),
    (1, 10, "complete", 3, 1),
    (1, None, "partition_completed", 2, 1),
]


def test_the_engine_checker_passes_a_clean_history() -> None:
    assert check_history(CLEAN) == []


def test_the_engine_checker_fails_on_a_doubled_completion() -> None:
    doubled = [*CLEAN[:6], (1, 10, "complete", 4, 1), CLEAN[6]]
    problems = check_history(doubled)
    assert any(p.startswith("5:") and "completed twice" in p for p in problems), problems


def test_the_engine_checker_fails_on_a_row_changed_twice_from_one_version() -> None:
    problems = check_history([*CLEAN[:6], (1, 10, "complete", 3, 1)])
    assert any(p.startswith("3:") for p in problems), problems


def test_the_engine_checker_fails_on_a_gate_going_down() -> None:
    problems = check_history([*CLEAN, (1, None, "gate_advanced", 3, 0)])
    assert any(p.startswith("4:") for p in problems), problems


def test_the_engine_checker_reads_a_broken_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'broken.db'}"
    migrate(url)
    store = Store.open(url)
    try:
        feed = Feed.create(store, "broken")
        feed.enqueue("p", {"a": 1, "b": 2}, gate=2)
        assert check_invariants(store, "broken") == []
        p = store.tables.partitions
        with store.engine.begin() as conn:  # closed over available items, and a gate moved past them
            conn.execute(update(p).where(p.c.feed == "broken").values(status="complete", gate=3))
        problems = check_invariants(store, "broken")
        assert any(x.startswith("1:") for x in problems), problems
        assert any(x.startswith("2:") for x in problems), problems
        with pytest.raises(AssertionError, match="invariant 2: partition p is complete"):
            verify(store, "broken", Expected(), [])
    finally:
        store.close()


# -- the suite's own checks ------------------------------------------------------------------


def ev(  # noqa: PLR0917 - one history row, its columns in the table's order
    pk: int, item: str | None, event: str, version: int, gate: int, attempt: int | None = None
) -> Event:
    return Event(pk, "p", item, event, version, gate, attempt, "w")


HISTORY = [
    ev(1, None, "enqueued", 0, 0),
    ev(2, "a", "dispatched", 0, 0, 1),
    ev(3, "b", "dispatched", 0, 0, 1),
    ev(4, "a", "gate", 1, 1, 1),
    ev(5, "b", "gate", 1, 1, 1),
    ev(6, None, "gate_advanced", 1, 1),
    ev(7, "a", "dispatched", 2, 1, 2),
    ev(8, "b", "dispatched", 2, 1, 2),
    ev(9, "a", "complete", 3, 1, 2),
    ev(10, "b", "complete", 3, 1, 2),
    ev(11, None, "partition_completed", 2, 1),
]
CALLS = [
    Call(1, "p", "a", 0, 1, "w1", "gate", 0.0),
    Call(2, "p", "b", 0, 1, "w1", "gate", 0.0),
    Call(3, "p", "a", 1, 2, "w1", "done", 0.0),
    Call(4, "p", "b", 1, 2, "w1", "done", 0.0),
]


def expected() -> Expected:
    e = Expected()
    e.add("p", "a", 1)
    e.add("p", "b", 1)
    return e


def test_the_suite_checks_pass_a_clean_run() -> None:
    assert check_gate_history(HISTORY, CALLS) == []
    assert check_calls(CALLS, expected()) == []
    assert check_single_completion(HISTORY, expected()) == ([], 2)


def test_a_doubled_committed_completion_is_caught() -> None:
    doubled = [*HISTORY[:10], ev(12, "a", "complete", 4, 1, 3), HISTORY[10]]
    problems, count = check_single_completion(doubled, expected())
    assert count == 3
    assert problems == ["item p/a has 2 committed completions"]


def test_a_dispatch_before_its_gate_and_a_result_after_the_advance_are_caught() -> None:
    early = [HISTORY[0], ev(2, "a", "dispatched", 0, 1, 1), *HISTORY[1:]]
    assert any("dispatched at gate 1 while at 0" in p for p in check_gate_history(early))
    late = [*HISTORY[:4], HISTORY[5], HISTORY[4], *HISTORY[6:]]  # b's result after the advance
    assert any("committed at 1" in p for p in check_gate_history(late))


def test_a_gate_entered_twice_and_a_partition_completed_twice_are_caught() -> None:
    twice = [
        *HISTORY[:6],
        ev(20, None, "gate_advanced", 2, 1),
        *HISTORY[6:],
        ev(21, None, "partition_completed", 3, 1),
    ]
    problems = check_gate_history(twice)
    assert any("entered gate 1 twice" in p for p in problems), problems
    assert any("went from 1 to 1" in p for p in problems), problems
    assert any("completed 2 times" in p for p in problems), problems


def test_a_committed_result_no_handler_call_made_is_caught() -> None:
    assert any("matches no handler call" in p for p in check_gate_history(HISTORY, CALLS[:3]))


def test_calls_out_of_gate_order_in_the_handler_log_are_caught() -> None:
    # b's first call at gate 0 arrives after a's call at gate 1: the gate was passed too early.
    swapped = [
        CALLS[0],
        Call(2, "p", "a", 1, 2, "w1", "done", 0.0),
        Call(3, "p", "b", 0, 1, "w1", "gate", 0.0),
        CALLS[3],
    ]
    assert any("gates out of order" in p for p in check_calls(swapped, expected()))
    # A late repeat of a gate-0 call (at-least-once) is fine: its first call came in time.
    repeat = [*CALLS, Call(5, "p", "a", 0, 3, "w2", "gate", 0.0)]
    assert check_calls(repeat, expected()) == []
    assert any("never called at gate(s) [1]" in p for p in check_calls(CALLS[:2], expected()))


def test_lost_items_wrong_outcomes_and_forged_results_are_caught() -> None:
    state = State(
        partitions={"p": ("complete", 1)},
        items={
            ("p", "a"): ("complete", 1, {"by": 2}, None),  # holds b's answer
            ("p", "x"): ("complete", 1, {"by": 3}, None),  # never enqueued
        },
        history=[],
    )
    problems = check_outcomes(state, expected(), skip_policy=False)
    assert "item p/b was enqueued but is not in the database" in problems
    assert "item p/x is in the database but was never enqueued" in problems
    forged = check_results_came_from_calls(state, CALLS, expected())
    assert forged == ["item p/a holds data {'by': 2} that no call of it answered"]
    state.items[("p", "b")] = ("available", 1, None, None)
    assert any(
        "partition p is complete with items" in p
        for p in check_outcomes(state, expected(), skip_policy=False)
    )
    fail = expected()
    fail.failed[("p", "b")] = "poison"
    state.items[("p", "b")] = ("failed", 1, None, "timeout")
    assert "item p/b failed for another reason: 'timeout'" in check_outcomes(state, fail, skip_policy=True)
