"""The autoscaler hook the operator's background loop calls for each autoscaled FeedWatcher.

Per FeedWatcher it keeps the decision's memory (recommendations of the
stabilisation window, consecutive failures, the last active time) and turns a
decision into what the loop writes: the Deployment's replicas, a status patch,
the ``ScalingActive`` condition and Events. It writes as little as it can:

- ``desiredReplicas``, ``lastScaleTime`` and a Normal ``Scaled`` Event when the
  replicas change;
- ``status.backlog`` when the decision changes, otherwise at most once a
  minute and only when its counts changed (``readTime`` alone is no change);
- ``lastActiveTime`` when the feed turns inactive;
- one Warning Event per distinct problem (not one per failed read), and a
  Normal ``Recovered`` when reads work again;
- a ``ScalingActive`` message that stays the same from read to read, so the
  condition is rewritten only when something real changes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from feedwatch.observability.actions import Action
from feedwatch.operator.autoscaling import Decision, Memory, Policy, Reading, decide
from feedwatch.operator.backlog import BacklogReader, BacklogReadError
from feedwatch.operator.specs import AutoscalingSpec, FeedWatcherSpec
from feedwatch.store.records import Backlog

if TYPE_CHECKING:
    from feedwatch.operator.reconciling import Reconciler

log = logging.getLogger("feedwatch.operator.autoscaler")

#: Counts stop here at least (status shows real figures for small feeds); above it
#: they stop at maxReplicaCount * targetBacklogPerReplica + 1, past which nothing changes.
COUNT_FLOOR = 1000
#: Unchanged decisions write status.backlog at most this often.
BACKLOG_REFRESH = timedelta(seconds=60)
SQLITE_CAP = (
    "capped at 1 replica: watchers on other machines cannot share a SQLite file; use MariaDB or PostgreSQL"
)

Event = tuple[str, str, str]
Condition = tuple[str, str, str]


@dataclass(frozen=True)
class ScaleResult:
    """What the loop applies: replicas, one merged status patch, the condition, Events."""

    replicas: int | None
    status_patch: dict[str, Any]
    condition: Condition
    events: list[Event] = field(default_factory=list)


@dataclass
class _State:
    memory: Memory
    next_due: float = 0.0
    problem: str | None = None
    fallback: bool = False


class _Metrics:
    """The operator's per-FeedWatcher gauges (namespace/name labels), one set per registry."""

    _made: ClassVar[dict[int, _Metrics]] = {}

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["namespace", "name"]
        self.partitions = Gauge(
            "feedwatch_operator_backlog_partitions",
            "Due partitions of the FeedWatcher's feed (capped count).",
            labels,
            registry=registry,
        )
        self.items = Gauge(
            "feedwatch_operator_backlog_items",
            "Due items at their partition's gate (capped count).",
            labels,
            registry=registry,
        )
        self.oldest = Gauge(
            "feedwatch_operator_backlog_oldest_item_age_seconds",
            "Age of the oldest due item.",
            labels,
            registry=registry,
        )
        self.desired = Gauge(
            "feedwatch_operator_desired_replicas",
            "Replicas the autoscaler decided.",
            labels,
            registry=registry,
        )
        self.failures = Counter(
            "feedwatch_operator_backlog_read_failures",
            "Backlog reads that failed.",
            labels,
            registry=registry,
        )
        self.all = (self.partitions, self.items, self.oldest, self.desired, self.failures)

    @classmethod
    def of(cls, registry: CollectorRegistry) -> _Metrics:
        made = cls._made.get(id(registry))
        if made is None:
            made = cls._made[id(registry)] = cls(registry)
        return made

    def forget(self, namespace: str, name: str) -> None:
        for metric in self.all:
            try:
                metric.remove(namespace, name)
            except KeyError:
                pass


class Autoscaler:
    """Scales each autoscaled FeedWatcher's Deployment with its feed's backlog."""

    def __init__(
        self,
        *,
        backlogs: BacklogReader,
        registry: CollectorRegistry = REGISTRY,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backlogs = backlogs
        self.metrics = _Metrics.of(registry)
        self._monotonic = monotonic
        self._states: dict[tuple[str, str], _State] = {}

    def next_due(self, namespace: str, name: str) -> float:
        """Monotonic time of the next backlog read (0: now)."""
        state = self._states.get((namespace, name))
        return 0.0 if state is None else state.next_due

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is remembered of a deleted FeedWatcher."""
        self._states.pop((namespace, name), None)
        self.metrics.forget(namespace, name)

    async def evaluate(
        self,
        *,
        spec: FeedWatcherSpec,
        status: Mapping[str, Any],
        current_replicas: int | None,
        database_url: str,
        now: datetime,
    ) -> ScaleResult:
        """Read the backlog, decide, and say what to write."""
        scaling = spec.autoscaling
        if scaling is None:
            raise ValueError(f"FeedWatcher {spec.namespace}/{spec.name} has no spec.autoscaling")
        key = (spec.namespace, spec.name)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State(
                Memory(since=now, last_active=_last_active(status, scaling, now))
            )
        state.next_due = self._monotonic() + scaling.polling_interval
        policy = _policy(scaling, database_url)
        limit = max(scaling.max_replica_count * scaling.target_backlog_per_replica + 1, COUNT_FLOOR)
        backlog: Backlog | None = None
        problem: str | None = None
        try:
            backlog = await self.backlogs.read(
                database_url, feed=spec.feed, prefix=spec.database.table_prefix, limit=limit
            )
        except BacklogReadError as error:
            problem = str(error)
        reading = None
        if backlog is not None:
            count = backlog.items if scaling.metric == "items" else backlog.partitions
            reading = Reading(count, backlog.partitions, backlog.leased)
        decision = decide(
            reading=reading, current=current_replicas, policy=policy, memory=state.memory, now=now
        )
        state.memory = decision.memory
        self._observe(spec, backlog, decision)
        events = self._events(state, current_replicas, decision, problem)
        patch = _status_patch(status, current_replicas, decision, backlog, now)
        condition = _condition(spec, scaling, decision, problem)
        return ScaleResult(decision.replicas, patch, condition, events)

    def _observe(self, spec: FeedWatcherSpec, backlog: Backlog | None, decision: Decision) -> None:
        labels = (spec.namespace, spec.name)
        self.metrics.desired.labels(*labels).set(decision.replicas)
        if backlog is None:
            self.metrics.failures.labels(*labels).inc()
            return
        self.metrics.partitions.labels(*labels).set(backlog.partitions)
        self.metrics.items.labels(*labels).set(backlog.items)
        self.metrics.oldest.labels(*labels).set(backlog.oldest_item_age_seconds)

    def _events(
        self, state: _State, current: int | None, decision: Decision, problem: str | None
    ) -> list[Event]:
        events: list[Event] = []
        if problem is not None:
            if problem != state.problem:
                events.append(("Warning", "BacklogReadFailed", problem))
            state.problem = problem
        elif state.problem is not None:
            events.append(("Normal", "Recovered", "the backlog is read again"))
            state.problem = None
        fallback = decision.reason == "FallbackApplied"
        if fallback and not state.fallback:
            events.append(("Warning", "FallbackApplied", decision.explanation))
        state.fallback = fallback
        if current is not None and decision.replicas != current:
            events.append(
                ("Normal", "Scaled", f"scaled {current} -> {decision.replicas}: {decision.explanation}")
            )
        return events


def _last_active(status: Mapping[str, Any], scaling: AutoscalingSpec, now: datetime) -> datetime | None:
    """When the feed was last active, as far as the status tells a restarted operator.

    ``lastActiveTime`` is written when the feed turns inactive; if the last
    ``status.backlog`` written shows an active feed, it may have stayed active
    until now, so the cooldown counts from now (never shorter than it should be).
    """
    shown = status.get("backlog") or {}
    count = shown.get("items" if scaling.metric == "items" else "partitions")
    if isinstance(count, int) and count > scaling.activation_backlog:
        return now
    return _parse_time(status.get("lastActiveTime"))


def _policy(scaling: AutoscalingSpec, database_url: str) -> Policy:
    sqlite = database_url.startswith("sqlite")
    fallback = scaling.fallback
    return Policy(
        min_replicas=scaling.min_replica_count,
        max_replicas=scaling.max_replica_count,
        target=scaling.target_backlog_per_replica,
        metric=scaling.metric,
        activation=scaling.activation_backlog,
        cooldown=float(scaling.cooldown_period),
        window=float(scaling.scale_down_stabilization_window),
        fallback_threshold=None if fallback is None else fallback.failure_threshold,
        fallback_replicas=None if fallback is None else fallback.replicas,
        cap=1 if sqlite else None,
        cap_reason=SQLITE_CAP if sqlite else "",
    )


def _status_patch(
    status: Mapping[str, Any],
    current: int | None,
    decision: Decision,
    backlog: Backlog | None,
    now: datetime,
) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    changed = decision.replicas != status.get("desiredReplicas") or decision.replicas != current
    if decision.replicas != status.get("desiredReplicas"):
        patch["desiredReplicas"] = decision.replicas
    if current is not None and decision.replicas != current:
        patch["lastScaleTime"] = _format_time(now)
    if backlog is not None:
        shown = {
            "partitions": backlog.partitions,
            "items": backlog.items,
            "oldestItemAgeSeconds": round(backlog.oldest_item_age_seconds, 1),
            "readTime": _format_time(now),
        }
        before = status.get("backlog") or {}
        counts_changed = (before.get("partitions"), before.get("items")) != (
            backlog.partitions,
            backlog.items,
        )
        written = _parse_time(before.get("readTime"))
        stale = written is None or now - written >= BACKLOG_REFRESH
        if changed or (counts_changed and stale):
            patch["backlog"] = shown
    if decision.turned_inactive and decision.memory.last_active is not None:
        value = _format_time(decision.memory.last_active)
        if value != status.get("lastActiveTime"):
            patch["lastActiveTime"] = value
    return patch


def _condition(
    spec: FeedWatcherSpec, scaling: AutoscalingSpec, decision: Decision, problem: str | None
) -> Condition:
    if decision.reason == "FallbackApplied":
        replicas = scaling.fallback.replicas if scaling.fallback else decision.replicas
        return (
            "False",
            "FallbackApplied",
            f"backlog reads failed {scaling.fallback.failure_threshold if scaling.fallback else ''} "
            f"times in a row: running fallback.replicas ({replicas}); last error: {problem}",
        )
    if decision.reason == "BacklogReadFailed":
        return ("False", "BacklogReadFailed", f"{problem}; the replicas are kept as they are")
    unit = "partition" if scaling.metric == "partitions" else "item"
    message = (
        f"replicas follow the backlog: {scaling.target_backlog_per_replica} due {unit}s per replica, "
        f"between {scaling.min_replica_count} and {scaling.max_replica_count}; "
        f"spec.replicas ({spec.replicas}) is ignored while autoscaling is enabled"
    )
    for note in decision.notes:
        message += f"; {note}"
    return ("True", "BacklogRead", message)


def _format_time(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class AutoscalingPass:
    """The background loop's hook: evaluates each due, autoscaled FeedWatcher of the registry.

    Evaluations run as tasks of their own (one per FeedWatcher at a time), so a
    slow database delays only its own FeedWatchers, never the loop's other
    work. Each result is handed to the reconciler, which applies the replicas
    and writes the status in its one status patch: ``entry.autoscaled_replicas``,
    ``entry.scaling`` (ScalingActive) and ``entry.extra_status``.
    """

    def __init__(self, reconciler: Reconciler, autoscaler: Autoscaler) -> None:
        self.reconciler = reconciler
        self.autoscaler = autoscaler
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        reconciler.on_forget.append(lambda key: self.autoscaler.forget(*key))

    async def __call__(self, now: float) -> None:
        for key, entry in list(self.reconciler.entries.items()):
            spec = entry.spec
            if spec is None or entry.deleted or spec.paused or not spec.autoscaling_enabled:
                continue
            if key in self._running or self.autoscaler.next_due(*key) > now:
                continue
            url = self._database_url(spec)
            if url is None:
                continue  # the reconciler reports the missing Secret or key
            task = asyncio.create_task(self._evaluate(key, url), name=f"autoscale {key[0]}/{key[1]}")
            self._running[key] = task
            task.add_done_callback(functools.partial(self._done, key))

    def _done(self, key: tuple[str, str], _task: asyncio.Task[None]) -> None:
        self._running.pop(key, None)

    def _database_url(self, spec: FeedWatcherSpec) -> str | None:
        ref = spec.database.url_secret_ref
        snapshot = self.reconciler.secrets.get((spec.namespace, ref.name))
        raw = None if snapshot is None else snapshot.value(ref.key)
        if raw is None:
            return None
        try:
            return raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            return None

    async def _evaluate(self, key: tuple[str, str], url: str) -> None:
        entry = self.reconciler.entries.get(key)
        if entry is None or entry.spec is None:
            return
        try:
            live = self.reconciler.deployments.get(key)
            current = None if live is None else int((live.get("spec") or {}).get("replicas", 0))
            result = await self.autoscaler.evaluate(
                spec=entry.spec,
                status=entry.body.get("status") or {},
                current_replicas=current,
                database_url=url,
                now=datetime.now(UTC),
            )
            before = (entry.autoscaled_replicas, entry.scaling, dict(entry.extra_status))
            entry.autoscaled_replicas = result.replicas
            entry.scaling = result.condition
            entry.extra_status.update(result.status_patch)
            for type_, reason, message in result.events:
                log.info("%s/%s: %s: %s", *key, reason, message, extra={"action": Action.AUTOSCALER_EVENT})
                await self.reconciler.kube.post_event(entry.body, type_=type_, reason=reason, message=message)
            if (entry.autoscaled_replicas, entry.scaling, entry.extra_status) != before:
                await self.reconciler.reconcile_quietly(key)  # applies the replicas, writes the status
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "%s/%s: autoscaling failed; retrying", *key, extra={"action": Action.AUTOSCALER_FAILED}
            )

    async def stop(self) -> None:
        """Cancel the evaluations in flight (safe to call twice)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
