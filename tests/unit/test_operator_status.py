"""Conditions and status of a FeedWatcher (pure: no API server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from feedwatch.operator.problems import Problem
from feedwatch.operator.status import (
    Observed,
    condition,
    condition_of,
    desired_status,
    status_patch,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 3, 6, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def _deployment(
    *, replicas: int = 2, ready: int = 2, updated: int | None = None, current: int | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"generation": 4},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 4,
            "replicas": replicas if current is None else current,
            "updatedReplicas": replicas if updated is None else updated,
            "readyReplicas": ready,
        },
    }


def _seen(**changes: Any) -> Observed:
    values: dict[str, Any] = {
        "name": "resumes",
        "generation": 7,
        "feed": "resumes",
        "paused": False,
        "deployment": _deployment(),
        "problem": None,
    }
    values.update(changes)
    return Observed(**values)


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_a_ready_deployment_is_ready_settled_and_not_degraded() -> None:
    status = desired_status(_seen(), {}, T0)
    assert _conditions(status) == {
        "Ready": ("True", "DeploymentAvailable"),
        "Progressing": ("False", "Settled"),
        "Degraded": ("False", "AsExpected"),
    }
    assert status["observedGeneration"] == 7
    assert all(c["observedGeneration"] == 7 for c in status["conditions"])
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    assert status["selector"] == "feedwatch.dev/feedwatcher=resumes"
    assert status["feed"] == "resumes"


@pytest.mark.parametrize(
    ("deployment", "ready", "progressing"),
    [
        (_deployment(ready=1), ("False", "PodsNotReady"), ("True", "Scaling")),
        (_deployment(updated=1, current=3, ready=2), ("False", "PodsNotReady"), ("True", "RollingOut")),
        (_deployment(replicas=0, ready=0), ("True", "ScaledToZero"), ("False", "Settled")),
        (None, ("False", "PodsNotReady"), ("False", "Settled")),
    ],
)
def test_ready_and_progressing_follow_the_deployment(
    deployment: dict[str, Any] | None, ready: tuple[str, str], progressing: tuple[str, str]
) -> None:
    conditions = _conditions(desired_status(_seen(deployment=deployment), {}, T0))
    assert conditions["Ready"] == ready
    assert conditions["Progressing"] == progressing


def test_a_deployment_not_yet_observed_by_its_controller_is_rolling_out() -> None:
    deployment = _deployment()
    deployment["metadata"]["generation"] = 5
    assert _conditions(desired_status(_seen(deployment=deployment), {}, T0))["Progressing"] == (
        "True",
        "RollingOut",
    )


def test_a_progress_deadline_exceeded_is_reported() -> None:
    deployment = _deployment(ready=0)
    deployment["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "slow"}
    ]
    conditions = _conditions(desired_status(_seen(deployment=deployment), {}, T0))
    assert conditions["Progressing"] == ("False", "ProgressDeadlineExceeded")


def test_degraded_makes_ready_false_with_the_same_reason_and_message() -> None:
    problem = Problem("SecretNotFound", "Secret 'db' does not exist")
    status = desired_status(_seen(problem=problem), {}, T0)
    assert _conditions(status)["Degraded"] == ("True", "SecretNotFound")
    ready = condition_of(status, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "SecretNotFound",
        "Secret 'db' does not exist",
    )


def test_paused_is_progressing_false_and_the_rest_still_follows_the_deployment() -> None:
    conditions = _conditions(desired_status(_seen(paused=True), {}, T0))
    assert conditions["Progressing"] == ("False", "Paused")
    assert conditions["Ready"] == ("True", "DeploymentAvailable")


def test_scaling_active_appears_only_while_autoscaling_is_on() -> None:
    scaling = ("True", "BacklogRead", "backlog 4 partitions")
    on = desired_status(_seen(scaling=scaling, autoscaled=True), {}, T0)
    assert _conditions(on)["ScalingActive"] == ("True", "BacklogRead")
    off = desired_status(_seen(), on, T1)
    assert "ScalingActive" not in _conditions(off)


def test_last_transition_time_is_kept_unless_the_status_flips() -> None:
    first = desired_status(_seen(deployment=_deployment(ready=1)), {}, T0)
    # Same status, different message: the time stays.
    second = desired_status(_seen(deployment=_deployment(ready=0)), first, T1)
    ready = condition_of(second, "Ready")
    assert ready is not None
    assert ready["lastTransitionTime"] == "2026-12-03T06:00:00Z"
    assert ready["message"] == "0/2 watcher pods ready"
    # Flipped: the time moves.
    third = desired_status(_seen(), second, T1)
    ready = condition_of(third, "Ready")
    assert ready is not None
    assert ready["lastTransitionTime"] == "2026-12-03T06:05:00Z"


def test_condition_keeps_the_time_of_the_same_status() -> None:
    previous = [{"type": "Ready", "status": "True", "lastTransitionTime": "then"}]
    kept = condition(previous, type_="Ready", status="True", reason="R", message="m", generation=1, now=T0)
    assert kept["lastTransitionTime"] == "then"


def test_an_unchanged_status_needs_no_patch_and_a_change_patches_only_what_changed() -> None:
    current = desired_status(_seen(), {}, T0)
    assert status_patch(current, desired_status(_seen(), current, T1)) == {}
    scaled = desired_status(_seen(deployment=_deployment(replicas=3, ready=2)), current, T1)
    patch = status_patch(current, scaled)
    assert set(patch) == {"replicas", "conditions"}  # readyReplicas is still 2
    newer = desired_status(_seen(generation=8), current, T1)
    assert set(status_patch(current, newer)) == {"observedGeneration", "conditions"}
