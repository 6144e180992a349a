"""kopf's handlers: the only module with ``@kopf.on.*``, and thin.

No ``@kopf.timer``, no ``@kopf.daemon`` and no ``on.delete``: each would put a
finalizer on every FeedWatcher, so deleting one would hang while the
operator is down. Deletion is the garbage collector's (owner references);
periodic work is the background loop's (``loop.py``).

kopf keeps its progress and diff-base in annotations under ``feedwatch.dev``
(a v1 CRD prunes an undeclared ``status.kopf``), posts its own Events only
at WARNING and above, and runs standalone (no peering objects).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from feedwatch.operator.deployments import MANAGED_BY, MANAGED_BY_LABEL
from feedwatch.operator.kube import GROUP, PLURAL, VERSION
from feedwatch.operator.operating import Operator
from feedwatch.operator.reconciling import key_of
from feedwatch.settings import OperatorSettings

ANNOTATION_PREFIX = "feedwatch.dev"


def _operator(memo: Any) -> Operator:
    return memo["feedwatch_operator"]  # type: ignore[no-any-return]


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.peering.standalone = True
    # Renew watch streams regularly: a connection that died silently (a NAT, a proxy)
    # would otherwise leave the operator blind without knowing it.
    settings.watching.server_timeout = 600
    settings.watching.client_timeout = 660
    settings.watching.connect_timeout = 30
    options = memo.get("feedwatch_settings") or OperatorSettings.from_environment()
    operator = Operator(options)
    memo["feedwatch_operator"] = operator
    try:
        await operator.start()
    except Exception as error:  # e.g. the health port is taken: stop, do not limp
        await operator.stop()
        raise kopf.PermanentError(f"the operator cannot start: {error}") from error


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "feedwatch_operator" in memo:
        await _operator(memo).stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def feedwatcher_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keep the registry current (every event, status writes included: no API call here)."""
    _operator(memo).reconciler.observe(body, deleted=event.get("type") == "DELETED")


#: Seconds before kopf retries a reconcile that failed unexpectedly (an API error);
#: problems of the FeedWatcher itself are status, not failures, and are not retried here.
RETRY_BACKOFF = 10.0


@kopf.on.resume(GROUP, VERSION, PLURAL, backoff=RETRY_BACKOFF)
@kopf.on.create(GROUP, VERSION, PLURAL, backoff=RETRY_BACKOFF)
@kopf.on.update(GROUP, VERSION, PLURAL, backoff=RETRY_BACKOFF)
async def feedwatcher_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Reconcile, reading the Secrets again. Problems end up in the status, not here."""
    reconciler = _operator(memo).reconciler
    reconciler.observe(body)
    await reconciler.reconcile(key_of(body), read_secrets=True)


@kopf.on.event("apps", "v1", "deployments", labels={MANAGED_BY_LABEL: MANAGED_BY})
async def deployment_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """An owned Deployment changed: correct drift, recreate it, or let the status follow it."""
    operator = _operator(memo)
    deleted = event.get("type") == "DELETED"
    key = operator.reconciler.observe_deployment(body, deleted=deleted)
    if key is None:
        return
    if deleted:  # deleted by hand, or by the garbage collector after its FeedWatcher?
        current = await operator.kube.read_feedwatcher(*key)
        if current is None or (current.get("metadata") or {}).get("deletionTimestamp"):
            operator.reconciler.forget(key)
            return
        operator.reconciler.observe(current)
    await operator.reconciler.reconcile_quietly(key)
