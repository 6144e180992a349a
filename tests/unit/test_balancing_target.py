"""The balancing rules, branch by branch: the target, whom to ask, when to give."""

from __future__ import annotations

import pytest

from feedwatch.engine import balancing

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("active", "live_watchers", "cap", "expected"),
    [
        pytest.param(10, 3, 100, 4, id="a fair share rounds up"),
        pytest.param(9, 3, 100, 3, id="an even share"),
        pytest.param(10, 3, 2, 2, id="capped by max_partitions"),
        pytest.param(0, 3, 100, 0, id="nothing active: nothing to hold"),
        pytest.param(5, 0, 100, 5, id="no live watcher counted: counts as one"),
        pytest.param(2, 5, 100, 1, id="more watchers than partitions: one each for some"),
    ],
)
def test_target(active: int, live_watchers: int, cap: int, expected: int) -> None:
    assert balancing.target(active, live_watchers, cap) == expected


@pytest.mark.parametrize(
    ("loads", "goal", "expected"),
    [
        pytest.param({"a": 5, "b": 1, "me": 0}, 3, "a", id="the one above target"),
        pytest.param({"a": 5, "b": 7, "me": 0}, 3, "b", id="the most loaded of several"),
        pytest.param({"a": 3, "me": 2}, 3, None, id="nobody above target"),
        pytest.param({"me": 9}, 3, None, id="never itself"),
        pytest.param({}, 0, None, id="no owners"),
        pytest.param({"a": 4, "b": 4}, 3, "b", id="a tie picks one, the same every time"),
    ],
)
def test_victim(loads: dict[str, int], goal: int, expected: str | None) -> None:
    assert balancing.victim(loads, "me", goal) == expected


@pytest.mark.parametrize(
    ("held", "goal", "held_for", "expected"),
    [
        pytest.param(3, 2, 10.0, True, id="above target and settled: give"),
        pytest.param(2, 2, 10.0, False, id="at target: keep"),
        pytest.param(1, 2, 10.0, False, id="below target: keep"),
        pytest.param(3, 2, 9.5, False, id="just received: keep (no ping-pong)"),
    ],
)
def test_may_give(held: int, goal: int, held_for: float, expected: bool) -> None:
    assert balancing.may_give(held=held, goal=goal, held_for=held_for, settle=10.0) is expected
