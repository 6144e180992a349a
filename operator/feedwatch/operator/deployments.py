"""The Deployment of a FeedWatcher: a pure function of its spec and resolved inputs.

``build_deployment`` is all the operator knows about pods: the watcher
container (``feedwatch watch`` with its settings as ``FEEDWATCH_*`` variables,
the database URL only by ``secretKeyRef``), probes, the restricted pod
security profile, the owner reference that lets the garbage collector delete
it, and the ``podTemplate`` merge. ``needs_apply`` decides whether a live
Deployment already says what the operator would apply, so an unchanged
FeedWatcher costs no write. No kopf, no Kubernetes client, no store here.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from feedwatch.operator.specs import NAME_LABEL, FeedWatcherSpec
from feedwatch.settings import env_name

API_VERSION = "feedwatch.dev/v1alpha1"
KIND = "FeedWatcher"
FIELD_MANAGER = "feedwatch-operator"
MANAGED_BY = "feedwatch-operator"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
CHECKSUM_ANNOTATION = "feedwatch.dev/secrets-checksum"
#: On the Deployment: a hash of the manifest last applied, so a changed spec is seen
#: even when the change only removes a field.
APPLIED_ANNOTATION = "feedwatch.dev/applied-hash"
CONTAINER = "watcher"
HEALTH_PORT = 8080
RUN_AS_USER = 10001  # the image's user (Dockerfile)
TMP_VOLUME = "feedwatch-tmp"
#: Seconds a watcher gets after its grace period to release its leases before SIGKILL.
RELEASE_MARGIN = 15


def labels(name: str) -> dict[str, str]:
    """The four labels of a FeedWatcher's Deployment and pods."""
    return {
        "app.kubernetes.io/name": "feedwatch-watcher",
        "app.kubernetes.io/instance": name,
        MANAGED_BY_LABEL: MANAGED_BY,
        NAME_LABEL: name,
    }


def secrets_checksum(versions: Mapping[str, tuple[str, str]]) -> str:
    """A hash of the referenced Secrets' ``(uid, resourceVersion)``, nothing derived from their data."""
    text = json.dumps(sorted((name, list(v)) for name, v in versions.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:32]


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _watcher_env(spec: FeedWatcherSpec) -> list[dict[str, Any]]:
    ref = spec.database.url_secret_ref
    env: list[dict[str, Any]] = [
        _secret_env("FEEDWATCH_DATABASE_URL", ref.name, ref.key),
        {"name": "FEEDWATCH_FEED", "value": spec.feed},
        {"name": "FEEDWATCH_TABLE_PREFIX", "value": spec.database.table_prefix},
        {"name": "HOME", "value": "/tmp"},  # noqa: S108 - an emptyDir: the root filesystem is read-only
    ]
    values: dict[str, str] = {env_name("health_port"): str(HEALTH_PORT)}
    values.update(spec.watcher.env())
    handler = spec.handler
    if handler is not None:
        values.update(handler.env())
    if spec.processor:
        values[env_name("processor")] = spec.processor
    env.extend({"name": key, "value": value} for key, value in sorted(values.items()))
    if handler is not None and handler.headers_secret_ref is not None:
        headers = handler.headers_secret_ref
        env.append(_secret_env(env_name("handler_headers"), headers.name, headers.key))
    return env


def _user_list(section: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    return [dict(entry) for entry in section.get(key) or []]


def build_deployment(
    spec: FeedWatcherSpec,
    *,
    replicas: int | None,
    default_image: str,
    secrets_checksum: str,
) -> dict[str, Any]:
    """The Deployment manifest the operator applies for ``spec``.

    ``replicas`` is decided by the caller (``spec.replicas`` or the autoscaler's);
    ``None`` leaves the field out. ``spec`` was checked when it was parsed
    (no ``FEEDWATCH_*`` in ``podTemplate.container.env``).
    """
    template = spec.pod_template
    user_container = template.container
    user_env = _user_list(user_container, "env")
    own_labels = labels(spec.name)

    security = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    probe = {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or default_image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["feedwatch"],
        "args": ["watch"],
        "env": _watcher_env(spec) + user_env,
        "ports": [{"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "health"}, **probe},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "health"}, **probe},
        "securityContext": security,
        "volumeMounts": [
            {"name": TMP_VOLUME, "mountPath": "/tmp"},  # noqa: S108 - an emptyDir
            *_user_list(user_container, "volumeMounts"),
        ],
    }
    if user_container.get("envFrom"):
        container["envFrom"] = _user_list(user_container, "envFrom")
    if spec.resources:
        container["resources"] = copy.deepcopy(dict(spec.resources))

    pod_spec: dict[str, Any] = {key: copy.deepcopy(value) for key, value in template.spec.items()}
    pod_spec.update(
        {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": int(spec.watcher.grace_period_seconds) + RELEASE_MARGIN,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS_USER,
                "runAsGroup": RUN_AS_USER,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [{"name": TMP_VOLUME, "emptyDir": {}}, *_user_list(template.spec, "volumes")],
        }
    )
    pod_labels = {**dict(template.labels), **own_labels}
    pod_annotations = {**dict(template.annotations), CHECKSUM_ANNOTATION: secrets_checksum}
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": {NAME_LABEL: spec.name}},
        "template": {
            "metadata": {"labels": pod_labels, "annotations": pod_annotations},
            "spec": pod_spec,
        },
    }
    if replicas is not None:
        deployment_spec = {"replicas": replicas, **deployment_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": own_labels,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": spec.name,
                    "uid": spec.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": deployment_spec,
    }


def with_applied_hash(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest with its own hash as an annotation (what ``needs_apply`` compares)."""
    result = copy.deepcopy(dict(manifest))
    result["metadata"].setdefault("annotations", {})[APPLIED_ANNOTATION] = manifest_hash(manifest)
    return result


def owned_by(deployment: Mapping[str, Any], uid: str) -> bool:
    """Whether the FeedWatcher with ``uid`` is the Deployment's controller."""
    refs = (deployment.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


#: Left out of the drift comparison: the API server rewrites quantities (0.1 -> 100m),
#: so a hand edit there is only caught with the next change of the spec.
_NOT_COMPARED = frozenset({"resources"})
#: The API server drops empty values (``env: [{name: X, value: ""}]`` comes back without
#: ``value``): absent in the live object is the same as empty in the desired one.
_OMITTED_WHEN_EMPTY: tuple[Any, ...] = ("", [], {})


def contains(live: Any, desired: Any) -> bool:
    """Whether ``live`` says everything ``desired`` says (defaults the API server added are fine)."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(
            key in _NOT_COMPARED
            or (contains(live[key], value) if key in live else value in _OMITTED_WHEN_EMPTY)
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        return all(contains(a, b) for a, b in zip(live, desired, strict=True))
    return bool(live == desired)


def needs_apply(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """Whether applying ``desired`` (already carrying its hash) would change ``live``."""
    if live is None:
        return True
    wanted = (desired.get("metadata") or {}).get("annotations", {}).get(APPLIED_ANNOTATION)
    have = ((live.get("metadata") or {}).get("annotations") or {}).get(APPLIED_ANNOTATION)
    if wanted != have:
        return True
    return not (
        contains(live.get("metadata") or {}, _comparable_metadata(desired))
        and contains(live.get("spec") or {}, desired.get("spec") or {})
    )


def _comparable_metadata(manifest: Mapping[str, Any]) -> dict[str, Any]:
    metadata = manifest.get("metadata") or {}
    return {k: v for k, v in metadata.items() if k in ("labels", "annotations", "ownerReferences")}
