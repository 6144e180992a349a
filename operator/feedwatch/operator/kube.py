"""The one module that calls the Kubernetes API (besides kopf's own watches).

Calls go through the synchronous ``kubernetes`` client in a small thread
pool, with raw JSON in and out (plain dicts in camelCase, as kopf gives
bodies). What the operator does, and so the RBAC its Role needs:

=====================================  ===========================================
resource                               verbs
=====================================  ===========================================
feedwatch.dev feedwatchers             get, list, watch, patch (kopf: watches and
                                       its progress/diff-base annotations)
feedwatch.dev feedwatchers/status      patch
apps deployments                       get, list, watch, create, patch
                                       (server-side apply may create)
core secrets                           get (by name; never list or watch)
core events                            create (ours and kopf's)
events.k8s.io events                   create (kopf, on newer clusters)
apiextensions customresourcedefinitions  list, watch (kopf's resource discovery)
core namespaces                        list, watch (kopf, for namespace patterns or
                                       cluster-wide mode)
=====================================  ===========================================

Nothing cluster-scoped is written. Writes are server-side apply of the
Deployment (field manager ``feedwatch-operator``, forced: the operator owns
the fields it sets), merge patches of the status subresource and Events.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from feedwatch.observability.actions import Action
from feedwatch.operator.deployments import API_VERSION, FIELD_MANAGER, KIND

log = logging.getLogger("feedwatch.operator.kube")

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "feedwatchers"
COMPONENT = "feedwatch-operator"
REQUEST_TIMEOUT = (5, 30)  # connect, read (s)
WORKERS = 16  # threads (and pooled connections) for API calls

T = TypeVar("T")


class ApplyRefused(Exception):  # noqa: N818 - a refusal, reported as InvalidSpec
    """The API server refused the Deployment (HTTP 422): its message says why."""


@dataclass(frozen=True)
class SecretSnapshot:
    """A Secret as read by name: its identity, and its data (base64, as the API gives it)."""

    uid: str
    resource_version: str
    data: Mapping[str, str]

    @property
    def version(self) -> tuple[str, str]:
        return self.uid, self.resource_version

    def value(self, key: str) -> bytes | None:
        raw = self.data.get(key)
        return None if raw is None else base64.b64decode(raw)


def load_client() -> client.ApiClient:
    """In-cluster configuration when running in a pod, else ``KUBECONFIG``/``~/.kube/config``."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    # One connection per worker thread, so no request waits for (or discards) a connection.
    configuration.connection_pool_maxsize = WORKERS
    return client.ApiClient(configuration)


def _json(response: Any) -> dict[str, Any]:
    return dict(json.loads(response.data))


def _message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return str(error.reason)


class Kube:
    """The operator's API calls, each run in a thread so the event loop never blocks."""

    def __init__(
        self, api_client: client.ApiClient, *, on_write: Callable[[str], None] | None = None
    ) -> None:
        self.api_client = api_client
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="feedwatch-kube")
        self._on_write = on_write or (lambda kind: None)
        self._instance = socket.gethostname()

    async def _call(self, function: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function)

    async def _unless_gone(self, request: Callable[[], Any]) -> dict[str, Any] | None:
        """The JSON that ``request`` (an API call, raw) answers; None when the object does not exist."""

        def send() -> dict[str, Any] | None:
            try:
                return _json(request())
            except ApiException as error:
                if error.status == 404:
                    return None
                raise

        return await self._call(send)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()  # type: ignore[no-untyped-call]

    # -- reads ------------------------------------------------------------
    async def read_secret(self, namespace: str, name: str) -> SecretSnapshot | None:
        """The Secret, or None when it does not exist."""
        body = await self._unless_gone(
            lambda: self.core.read_namespaced_secret(
                name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )
        if body is None:
            return None
        meta = body.get("metadata") or {}
        return SecretSnapshot(
            uid=str(meta.get("uid", "")),
            resource_version=str(meta.get("resourceVersion", "")),
            data=dict(body.get("data") or {}),
        )

    async def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._unless_gone(
            lambda: self.apps.read_namespaced_deployment(
                name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )

    async def read_feedwatcher(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._unless_gone(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )

    # -- writes -----------------------------------------------------------
    async def apply_deployment(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply; raises :class:`ApplyRefused` when the API server rejects it."""
        meta = manifest["metadata"]

        def apply() -> dict[str, Any]:
            try:
                return _json(
                    self.apps.patch_namespaced_deployment(
                        meta["name"],
                        meta["namespace"],
                        dict(manifest),
                        field_manager=FIELD_MANAGER,
                        force=True,
                        _content_type="application/apply-patch+yaml",
                        _preload_content=False,
                        _request_timeout=REQUEST_TIMEOUT,
                    )
                )
            except ApiException as error:
                if error.status in (400, 422):
                    raise ApplyRefused(_message(error)) from None
                raise

        result = await self._call(apply)
        self._on_write("deployment")
        return result

    async def patch_status(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """A merge patch of the status subresource; returns the FeedWatcher (None: it is gone)."""
        result = await self._unless_gone(
            lambda: self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": dict(patch)},
                field_manager=FIELD_MANAGER,
                _content_type="application/merge-patch+json",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )
        if result is not None:
            self._on_write("status")
        return result

    async def post_event(
        self, feedwatcher: Mapping[str, Any], *, type_: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event on the FeedWatcher (shown by ``kubectl describe fw``)."""
        meta = feedwatcher.get("metadata") or {}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }

        def send() -> bool:
            try:
                self.core.create_namespaced_event(
                    str(meta.get("namespace")),
                    cast(Any, body),  # a plain dict is sent as JSON
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except ApiException as error:  # best effort: e.g. the namespace is being deleted
                log.warning(
                    "cannot post Event %s on %s/%s: %s",
                    reason,
                    meta.get("namespace"),
                    meta.get("name"),
                    _message(error),
                    extra={"action": Action.EVENT_FAILED},
                )
                return False
            return True

        if await self._call(send):
            self._on_write("event")
