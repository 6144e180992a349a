"""The status of a FeedWatcher: a pure function of what the operator saw.

Conditions follow the Kubernetes API conventions and CloudNativePG: each
carries the generation it judged, and ``lastTransitionTime`` changes only
when its ``status`` flips. The reasons are a fixed table (docs/operator.md, "Status and
conditions"):

=============  ===================================  ==============================================
condition      True                                 False
=============  ===================================  ==============================================
Ready          DeploymentAvailable, ScaledToZero    PodsNotReady, or the Degraded reason
Progressing    RollingOut, Scaling                  Settled, Paused, ProgressDeadlineExceeded
Degraded       the problem's reason                 AsExpected
ScalingActive  BacklogRead                          BacklogReadFailed, FallbackApplied
=============  ===================================  ==============================================

``status_patch`` returns only what differs from the current status, so an
unchanged FeedWatcher gets no write (a status write re-triggers watchers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from feedwatch.operator.problems import Problem
from feedwatch.operator.specs import NAME_LABEL

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
SCALING_ACTIVE = "ScalingActive"


@dataclass(frozen=True)
class Observed:
    """What the status is computed from."""

    name: str
    generation: int
    feed: str
    paused: bool
    deployment: Mapping[str, Any] | None  # the live Deployment, None when there is none
    problem: Problem | None
    #: ScalingActive as (status, reason, message) while autoscaling is on; None removes it.
    scaling: tuple[str, str, str] | None = None
    #: Whether the replicas come from the autoscaler (0 is then ScaledToZero, healthy and idle).
    autoscaled: bool = False


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    previous: Sequence[Mapping[str, Any]],
    *,
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> dict[str, Any]:
    """A condition; its ``lastTransitionTime`` is the previous one's unless ``status`` flipped."""
    old = next((c for c in previous if c.get("type") == type_), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == status else None
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or timestamp(now),
        "observedGeneration": generation,
    }


def _ready(seen: Observed) -> tuple[str, str, str]:
    if seen.problem is not None:
        return "False", seen.problem.reason, seen.problem.message
    deployment = seen.deployment
    if deployment is None:
        return "False", "PodsNotReady", "the Deployment does not exist yet"
    wanted = int((deployment.get("spec") or {}).get("replicas", 1))
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    if wanted == 0:
        how = "autoscaled" if seen.autoscaled else "scaled"
        return "True", "ScaledToZero", f"{how} to zero replicas"
    if ready >= wanted and _rolled_out(deployment):
        return "True", "DeploymentAvailable", f"{ready}/{wanted} watcher pods ready"
    return "False", "PodsNotReady", f"{ready}/{wanted} watcher pods ready"


def _rolled_out(deployment: Mapping[str, Any]) -> bool:
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    generation = int((deployment.get("metadata") or {}).get("generation") or 0)
    return (
        int(status.get("observedGeneration") or 0) >= generation
        and int(status.get("updatedReplicas") or 0) >= wanted
        and int(status.get("replicas") or 0) <= wanted
    )


def _progressing(seen: Observed) -> tuple[str, str, str]:
    if seen.paused:
        return "False", "Paused", "spec.paused is true: the Deployment and its replicas are left alone"
    deployment = seen.deployment
    if deployment is None:
        return "False", "Settled", "no Deployment to roll out"
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return "False", "ProgressDeadlineExceeded", str(cond.get("message") or "")
    status = deployment.get("status") or {}
    wanted = int((deployment.get("spec") or {}).get("replicas", 1))
    if not _rolled_out(deployment):
        updated = int(status.get("updatedReplicas") or 0)
        return "True", "RollingOut", f"{updated}/{wanted} watcher pods updated"
    current = int(status.get("replicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    if current != wanted or ready != wanted:
        return "True", "Scaling", f"{ready} -> {wanted} watcher pods"
    return "False", "Settled", f"{wanted} watcher pods up to date"


def _degraded(seen: Observed) -> tuple[str, str, str]:
    if seen.problem is not None:
        return "True", seen.problem.reason, seen.problem.message
    return "False", "AsExpected", "no problem found"


def desired_status(seen: Observed, current: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The status fields the reconciler owns, as they should be now."""
    previous = list(current.get("conditions") or [])
    parts = {READY: _ready(seen), PROGRESSING: _progressing(seen), DEGRADED: _degraded(seen)}
    if seen.scaling is not None:
        parts[SCALING_ACTIVE] = seen.scaling
    conditions = [
        condition(
            previous,
            type_=type_,
            status=status,
            reason=reason,
            message=message,
            generation=seen.generation,
            now=now,
        )
        for type_, (status, reason, message) in parts.items()
    ]
    live = (seen.deployment or {}).get("status") or {}
    return {
        "observedGeneration": seen.generation,
        "feed": seen.feed,
        "selector": f"{NAME_LABEL}={seen.name}",
        "replicas": int(live.get("replicas") or 0),
        "readyReplicas": int(live.get("readyReplicas") or 0),
        "conditions": conditions,
    }


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``desired`` that differ from ``current``; empty when nothing changed."""
    return {key: value for key, value in desired.items() if current.get(key) != value}


def condition_of(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)
