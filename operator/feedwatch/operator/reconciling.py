"""Reconciling one FeedWatcher: the registry, and the one function that judges it.

Design note. The operator keeps an in-memory registry of the FeedWatchers it
serves (fed by kopf's watch events, which add no finalizer) and of their
Deployments (fed by a watch on the Deployments it labels). ``reconcile`` is
level-triggered and idempotent; it is called by kopf's create/update/resume
handlers, by every event of an owned Deployment (drift, and the status that
follows it), and by the background loop (Secret changes, retries). For one
FeedWatcher, calls are serialised by a lock; different FeedWatchers never
wait for each other.

One reconcile:

1. parse the spec (``InvalidSpec``);
2. read the referenced Secrets by name (at create/update/resume; otherwise the
   copies the background loop refreshes every few seconds) and resolve the
   database URL (``SecretNotFound``, ``SecretKeyNotFound``,
   ``InvalidDatabaseURL``, ``UnsupportedDatabase``);
3. refuse a second FeedWatcher for the same feed (``FeedConflict``);
4. prepare the database once per generation and URL: migrate, create the
   feed row, apply ``feedSettings`` (``SchemaMismatch`` blocks the
   Deployment; ``DatabaseUnreachable`` does not: the pods may reach what the
   operator cannot, and the loop retries with backoff);
5. unless paused, server-side apply the Deployment, only when it differs from
   the live one (``DeploymentConflict`` for one it does not own; the API
   server's refusal is ``InvalidSpec``). A problem that blocks leaves the last
   good Deployment as it is;
6. write the status only if it changed, one Warning Event per distinct
   problem, ``Recovered`` when it is gone.

Problems are results, not exceptions to kopf: kopf retries only unexpected
failures (API errors), so problems of the spec are never retried on a timer.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from feedwatch.observability.actions import Action
from feedwatch.operator import deployments, problems
from feedwatch.operator.database import Databases, Identity, identity, resolve_url
from feedwatch.operator.kube import ApplyRefused, Kube, SecretSnapshot
from feedwatch.operator.metrics import OperatorMetrics
from feedwatch.operator.problems import Problem, ProblemError
from feedwatch.operator.specs import FeedWatcherSpec, InvalidSpecError
from feedwatch.operator.status import DEGRADED, Observed, condition_of, desired_status, status_patch
from feedwatch.settings import OperatorSettings

log = logging.getLogger("feedwatch.operator")

Key = tuple[str, str]  # (namespace, name)
#: Status fields the autoscaler writes; removed when autoscaling is turned off.
AUTOSCALING_STATUS = ("desiredReplicas", "lastScaleTime", "lastActiveTime", "backlog")
#: A Secret as last read: None when it does not exist.
SecretCache = dict[Key, SecretSnapshot | None]


def key_of(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


def _resource_version(body: Mapping[str, Any] | None) -> int:
    try:
        return int((body or {}).get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclass
class Entry:
    """What the operator remembers of one FeedWatcher between reconciles."""

    namespace: str
    name: str
    body: dict[str, Any]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    spec: FeedWatcherSpec | None = None
    problem: Problem | None = None
    warned: Problem | None = None  # the last Warning Event posted
    insecure_warned: str = ""  # the handler URL InsecureHeaders was posted for
    identity: Identity | None = None
    #: (generation, url, target) the database was prepared for.
    database_done: tuple[Any, ...] | None = None
    database_failed: tuple[tuple[Any, ...], Problem] | None = None  # judged, not retried
    database_failures: int = 0
    database_retry_at: float | None = None
    database_unreachable: tuple[tuple[Any, ...], Problem] | None = None
    error_retry_at: float | None = None  # an unexpected failure outside kopf's handlers
    error_failures: int = 0
    #: Set by the autoscaler (when autoscaling is on): replicas to apply, the ScalingActive
    #: condition and extra status fields.
    autoscaled_replicas: int | None = None
    scaling: tuple[str, str, str] | None = None
    extra_status: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        return self.namespace, self.name

    @property
    def deleted(self) -> bool:
        return bool((self.body.get("metadata") or {}).get("deletionTimestamp"))


class Reconciler:
    """The registry of FeedWatchers and their Deployments, and ``reconcile``."""

    def __init__(
        self,
        *,
        kube: Kube,
        databases: Databases,
        settings: OperatorSettings,
        metrics: OperatorMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.databases = databases
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.entries: dict[Key, Entry] = {}
        #: Owned Deployments as last seen (None: known not to exist); absent: not seen yet.
        self.deployments: dict[Key, dict[str, Any] | None] = {}
        self.secrets: SecretCache = {}
        #: Called (without awaiting) when a FeedWatcher leaves the registry.
        self.on_forget: list[Callable[[Key], None]] = []

    # -- the registry -------------------------------------------------------
    def observe(self, body: Mapping[str, Any], *, deleted: bool = False) -> Entry | None:
        """Record a FeedWatcher as a watch event shows it (no API call, no write)."""
        key = key_of(body)
        if deleted:
            self.forget(key)
            return None
        entry = self.entries.get(key)
        fresh = copy.deepcopy(dict(body))
        if entry is None:
            entry = Entry(namespace=key[0], name=key[1], body=fresh)
            entry.warned = _degraded_problem(fresh.get("status") or {})
            self.entries[key] = entry
            self.metrics.feedwatchers.set(len(self.entries))
        elif (entry.body.get("metadata") or {}).get("uid") != (fresh.get("metadata") or {}).get("uid"):
            self.forget(key)
            return self.observe(body)
        elif _resource_version(fresh) >= _resource_version(entry.body):
            entry.body = fresh
        return entry

    def forget(self, key: Key) -> None:
        entry = self.entries.pop(key, None)
        self.metrics.feedwatchers.set(len(self.entries))
        if entry is None:
            return
        for callback in self.on_forget:
            callback(key)
        if entry.identity is not None:  # a FeedConflict loser may be the winner now
            for other in self.entries.values():
                if other.identity == entry.identity:
                    other.error_retry_at = self.clock()

    def observe_deployment(self, body: Mapping[str, Any], *, deleted: bool = False) -> Key | None:
        """Record an owned Deployment; returns the FeedWatcher to reconcile, if it is served."""
        key = key_of(body)
        cached = self.deployments.get(key)
        if deleted and cached is not None and not _same_uid(cached, body):
            return None  # an earlier object of that name; the one we know lives on
        if deleted:
            self.deployments[key] = None
        elif (
            cached is not None
            and _same_uid(cached, body)
            and _resource_version(body) < _resource_version(cached)
        ):
            return None  # older than what an apply already returned: nothing new
        else:
            self.deployments[key] = copy.deepcopy(dict(body))
        return key if key in self.entries else None

    def secret_refs(self) -> dict[Key, list[Key]]:
        """Each referenced Secret and the FeedWatchers that reference it."""
        refs: dict[Key, list[Key]] = {}
        for entry in self.entries.values():
            if entry.spec is not None:
                for name in entry.spec.secret_names():
                    refs.setdefault((entry.namespace, name), []).append(entry.key)
        return refs

    def due(self, now: float) -> list[Key]:
        """FeedWatchers whose database or unexpected-failure retry is due."""
        keys = []
        for entry in self.entries.values():
            retry = [t for t in (entry.database_retry_at, entry.error_retry_at) if t is not None]
            if retry and min(retry) <= now:
                keys.append(entry.key)
        return keys

    def next_due(self, *, exclude: Iterable[Key] = ()) -> float | None:
        skip = set(exclude)
        times = [
            t
            for e in self.entries.values()
            if e.key not in skip
            for t in (e.database_retry_at, e.error_retry_at)
            if t is not None
        ]
        return min(times, default=None)

    # -- reconciling --------------------------------------------------------
    async def reconcile(self, key: Key, *, read_secrets: bool = False) -> str:
        """Judge one FeedWatcher and write what changed; returns the outcome (for metrics)."""
        entry = self.entries.get(key)
        if entry is None:
            return "gone"
        async with entry.lock:
            started = time.monotonic()
            try:
                outcome = await self._reconcile(entry, read_secrets=read_secrets)
            except Exception:
                self.metrics.reconciles.labels("error").inc()
                entry.error_failures += 1
                entry.error_retry_at = self.clock() + min(
                    self.settings.database_retry_cap, 2.0 ** min(entry.error_failures, 6)
                )
                raise
            entry.error_failures = 0
            entry.error_retry_at = None
            if entry.database_retry_at is not None and entry.database_retry_at <= self.clock():
                entry.database_retry_at = None  # not reached (another problem first): not due again
            self.metrics.reconciles.labels(outcome).inc()
            self.metrics.duration.observe(time.monotonic() - started)
            return outcome

    async def _reconcile(self, entry: Entry, *, read_secrets: bool) -> str:
        if entry.deleted:
            return "gone"
        outcome = "unchanged"
        problem: Problem | None = None
        spec: FeedWatcherSpec | None = None
        try:
            spec = FeedWatcherSpec.from_object(entry.body)
        except InvalidSpecError as error:
            problem = Problem(problems.INVALID_SPEC, str(error))
        entry.spec = spec
        if spec is not None:
            try:
                problem, outcome = await self._converge(entry, spec, read_secrets=read_secrets)
            except ProblemError as error:
                problem = error.problem
        entry.problem = problem
        await self._write_status(entry, spec, problem)
        await self._post_events(entry, spec, problem)
        if problem is not None:
            return "degraded"
        return "paused" if spec is not None and spec.paused else outcome

    async def _converge(
        self, entry: Entry, spec: FeedWatcherSpec, *, read_secrets: bool
    ) -> tuple[Problem | None, str]:
        """Steps 2-5; raises ProblemError for what blocks the Deployment."""
        snapshots = await self._secrets(entry.namespace, spec.secret_names(), refresh=read_secrets)
        url = self._database_url(spec, snapshots)
        _check_headers_secret(spec, snapshots)
        entry.identity = identity(url, prefix=spec.database.table_prefix, feed=spec.feed)
        self._check_feed_conflict(entry, spec)
        db_problem = await self._prepare_database(entry, spec, url)
        if db_problem is not None and db_problem.blocks_deployment:
            raise ProblemError(db_problem.reason, db_problem.message)
        checksum = deployments.secrets_checksum(
            {name: snap.version for name, snap in snapshots.items() if snap is not None}
        )
        outcome = await self._apply(entry, spec, checksum)
        return db_problem, outcome

    async def _secrets(
        self, namespace: str, names: Iterable[str], *, refresh: bool
    ) -> dict[str, SecretSnapshot | None]:
        result = {}
        for name in sorted(names):
            if refresh or (namespace, name) not in self.secrets:
                self.secrets[namespace, name] = await self.kube.read_secret(namespace, name)
            result[name] = self.secrets[namespace, name]
        return result

    def _database_url(self, spec: FeedWatcherSpec, snapshots: Mapping[str, SecretSnapshot | None]) -> str:
        ref = spec.database.url_secret_ref
        raw = _secret_value(spec.namespace, ref.name, ref.key, snapshots, "spec.database.urlSecretRef")
        return resolve_url(raw, secret=ref.name, key=ref.key)

    def _check_feed_conflict(self, entry: Entry, spec: FeedWatcherSpec) -> None:
        rivals = [
            other
            for other in self.entries.values()
            if other.identity == entry.identity and not other.deleted and other is not entry
        ]
        mine = _age(entry.body)
        older = sorted((o for o in rivals if _age(o.body) < mine), key=lambda o: _age(o.body))
        if older:
            assert entry.identity is not None  # noqa: S101 - set just before
            raise ProblemError(
                problems.FEED_CONFLICT,
                f"FeedWatcher {older[0].namespace}/{older[0].name} already serves "
                f"{entry.identity.describe()}; give this one another spec.feed or "
                "spec.database.tablePrefix, or delete one of them",
            )
        for other in rivals:  # a younger one may have been judged before this one was known
            younger = _age(other.body) > mine
            if younger and (other.problem is None or other.problem.reason != problems.FEED_CONFLICT):
                other.error_retry_at = self.clock()

    async def _prepare_database(self, entry: Entry, spec: FeedWatcherSpec, url: str) -> Problem | None:
        assert entry.identity is not None  # noqa: S101 - set by the caller
        wanted = (spec.generation, url, entry.identity, spec.database.migrate)
        if entry.database_done == wanted:
            return None
        if entry.database_failed is not None and entry.database_failed[0] == wanted:
            return entry.database_failed[1]  # judged for this generation: wait for a change
        pending = entry.database_unreachable
        if pending is not None and pending[0] == wanted and self.clock() < (entry.database_retry_at or 0):
            return pending[1]  # still unreachable as far as we know; the loop retries when due
        try:
            await self.databases.prepare(
                url,
                target=entry.identity,
                migrate_schema=spec.database.migrate,
                feed_settings=spec.feed_settings,
            )
        except ProblemError as error:
            if error.problem.reason == problems.DATABASE_UNREACHABLE:
                entry.database_failures += 1
                delay = min(self.settings.database_retry_cap, 2.0 ** (entry.database_failures - 1))
                entry.database_retry_at = self.clock() + delay
                entry.database_unreachable = (wanted, error.problem)
                log.warning(
                    "%s/%s: %s (retry in %.0f s)",
                    entry.namespace,
                    entry.name,
                    error.problem.message,
                    delay,
                    extra={"action": Action.DATABASE_UNREACHABLE},
                )
            else:
                entry.database_failed = (wanted, error.problem)
                entry.database_retry_at = None
                entry.database_unreachable = None
            return error.problem
        entry.database_done = wanted
        entry.database_failed = None
        entry.database_unreachable = None
        entry.database_failures = 0
        entry.database_retry_at = None
        log.info(
            "%s/%s: database ready for %s",
            entry.namespace,
            entry.name,
            entry.identity.describe(),
            extra={"action": Action.DATABASE_PREPARED, "feed": spec.feed},
        )
        return None

    async def _live_deployment(self, entry: Entry) -> dict[str, Any] | None:
        if entry.key not in self.deployments:
            self.deployments[entry.key] = await self.kube.read_deployment(entry.namespace, entry.name)
        return self.deployments[entry.key]

    def replicas_for(self, entry: Entry, spec: FeedWatcherSpec, live: Mapping[str, Any] | None) -> int:
        """The replicas to apply: ``spec.replicas``, or the autoscaler's decision while it is on."""
        if not spec.autoscaling_enabled:
            return spec.replicas
        if entry.autoscaled_replicas is not None:
            return entry.autoscaled_replicas
        if live is not None:  # no decision yet: keep what runs
            return int((live.get("spec") or {}).get("replicas", 1))
        assert spec.autoscaling is not None  # noqa: S101 - autoscaling_enabled
        return max(1, spec.autoscaling.min_replica_count)

    async def _apply(self, entry: Entry, spec: FeedWatcherSpec, checksum: str) -> str:
        live = await self._live_deployment(entry)
        if live is not None and not deployments.owned_by(live, spec.uid):
            raise ProblemError(
                problems.DEPLOYMENT_CONFLICT,
                f"a Deployment named {spec.name!r} already exists in namespace {spec.namespace!r} "
                "and is not owned by this FeedWatcher; the operator never takes one over: "
                "delete or rename that Deployment, or rename the FeedWatcher",
            )
        if spec.paused:
            return "paused"
        try:
            desired = deployments.with_applied_hash(
                deployments.build_deployment(
                    spec,
                    replicas=self.replicas_for(entry, spec, live),
                    default_image=self.settings.watcher_image,
                    secrets_checksum=checksum,
                )
            )
        except InvalidSpecError as error:
            raise ProblemError(problems.INVALID_SPEC, str(error)) from None
        if not deployments.needs_apply(desired, live):
            return "unchanged"
        try:
            result = await self.kube.apply_deployment(desired)
        except ApplyRefused as error:
            raise ProblemError(
                problems.INVALID_SPEC, f"the API server refused the Deployment: {error}"
            ) from None
        self.deployments[entry.key] = result
        created = live is None
        log.info(
            "%s/%s: Deployment %s",
            entry.namespace,
            entry.name,
            "created" if created else "updated",
            extra={
                "action": Action.DEPLOYMENT_CREATED if created else Action.DEPLOYMENT_UPDATED,
                "feed": spec.feed,
            },
        )
        await self.kube.post_event(
            entry.body,
            type_="Normal",
            reason="Created" if created else "Updated",
            message=f"Deployment {spec.name} {'created' if created else 'updated'}",
        )
        return "applied"

    async def _write_status(
        self, entry: Entry, spec: FeedWatcherSpec | None, problem: Problem | None
    ) -> None:
        meta = entry.body.get("metadata") or {}
        current = entry.body.get("status") or {}
        seen = Observed(
            name=entry.name,
            generation=int(meta.get("generation") or 0),
            feed=spec.feed if spec else str((entry.body.get("spec") or {}).get("feed") or entry.name),
            paused=bool(spec and spec.paused),
            deployment=self.deployments.get(entry.key),
            problem=problem,
            scaling=entry.scaling if spec is not None and spec.autoscaling_enabled else None,
            autoscaled=bool(spec and spec.autoscaling_enabled),
        )
        desired = desired_status(seen, current, datetime.now(UTC))
        if spec is not None and spec.autoscaling_enabled:
            desired.update(entry.extra_status)
        else:  # autoscaling turned off: its fields would only mislead (null deletes in a merge patch)
            desired.update({key: None for key in AUTOSCALING_STATUS if key in current})
            entry.extra_status.clear()
        patch = status_patch(current, desired)
        if not patch:
            return
        result = await self.kube.patch_status(entry.namespace, entry.name, patch)
        if result is not None and _resource_version(result) >= _resource_version(entry.body):
            entry.body = result

    async def _post_events(self, entry: Entry, spec: FeedWatcherSpec | None, problem: Problem | None) -> None:
        if problem is not None and problem != entry.warned:
            log.warning(
                "%s/%s: %s: %s",
                entry.namespace,
                entry.name,
                problem.reason,
                problem.message,
                extra={"action": Action.DEGRADED},
            )
            await self.kube.post_event(
                entry.body, type_="Warning", reason=problem.reason, message=problem.message
            )
            entry.warned = problem
        elif problem is None and entry.warned is not None:
            await self.kube.post_event(
                entry.body,
                type_="Normal",
                reason="Recovered",
                message=f"recovered from {entry.warned.reason}",
            )
            log.info("%s/%s: recovered", entry.namespace, entry.name, extra={"action": Action.RECOVERED})
            entry.warned = None
        self._update_degraded_gauge()
        handler = spec.handler if spec is not None else None
        if (
            handler is not None
            and handler.headers_secret_ref is not None
            and handler.url.startswith("http://")
            and entry.insecure_warned != handler.url
        ):
            await self.kube.post_event(
                entry.body,
                type_="Warning",
                reason="InsecureHeaders",
                message=f"the headers of Secret {handler.headers_secret_ref.name!r} are sent over "
                f"plain http:// to {handler.url}; use https://",
            )
            entry.insecure_warned = handler.url

    def _update_degraded_gauge(self) -> None:
        counts: dict[str, int] = dict.fromkeys(problems.BLOCKING | problems.TRANSIENT, 0)
        for other in self.entries.values():
            if other.problem is not None:
                counts[other.problem.reason] = counts.get(other.problem.reason, 0) + 1
        for reason, count in counts.items():
            self.metrics.degraded.labels(reason).set(count)

    async def reconcile_quietly(self, key: Key, *, read_secrets: bool = False) -> None:
        """``reconcile`` for callers outside kopf's handlers: a failure is logged, then retried."""
        try:
            await self.reconcile(key, read_secrets=read_secrets)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "%s/%s: reconcile failed; retrying", *key, extra={"action": Action.RECONCILE_FAILED}
            )

    async def gather(self, calls: Iterable[Awaitable[None]], *, limit: int = 16) -> None:
        """Run ``calls`` at most ``limit`` at a time (a slow FeedWatcher never blocks the rest)."""
        gate = asyncio.Semaphore(limit)

        async def one(call: Awaitable[None]) -> None:
            async with gate:
                await call

        await asyncio.gather(*(one(c) for c in calls))


def _same_uid(one: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    return bool((one.get("metadata") or {}).get("uid") == (other.get("metadata") or {}).get("uid"))


def _age(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")


def _degraded_problem(status: Mapping[str, Any]) -> Problem | None:
    cond = condition_of(status, DEGRADED)
    if cond is None or cond.get("status") != "True":
        return None
    return Problem(str(cond.get("reason")), str(cond.get("message")))


def _secret_value(
    namespace: str,
    name: str,
    key: str,
    snapshots: Mapping[str, SecretSnapshot | None],
    field_name: str,
) -> bytes:
    snap = snapshots.get(name)
    if snap is None:
        raise ProblemError(
            problems.SECRET_NOT_FOUND,
            f"Secret {name!r} (from {field_name}) does not exist in namespace {namespace!r}; create it",
        )
    value = snap.value(key)
    if value is None:
        keys = ", ".join(sorted(snap.data)) or "none"
        raise ProblemError(
            problems.SECRET_KEY_NOT_FOUND,
            f"Secret {name!r} has no key {key!r} (its keys: {keys}); add the key or set {field_name}.key",
        )
    return value


def _check_headers_secret(spec: FeedWatcherSpec, snapshots: Mapping[str, SecretSnapshot | None]) -> None:
    handler = spec.handler
    if handler is not None and handler.headers_secret_ref is not None:
        ref = handler.headers_secret_ref
        _secret_value(spec.namespace, ref.name, ref.key, snapshots, "spec.handler.headersSecretRef")
