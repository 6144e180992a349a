"""FeedWatcherSpec: parsing, defaults, errors, and its agreement with the CRD.

The CRD (crds/feedwatcher.yaml) is the one source of the schema and specs.py the
one place of defaults in the code; the consistency tests walk both and fail on a
field one has and the other lacks, on a default that differs, and on a type that
differs.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from feedwatch.operator import specs
from feedwatch.operator.specs import (
    CONTAINER_FIELDS,
    POD_SPEC_FIELDS,
    AutoscalingSpec,
    FeedWatcherSpec,
    InvalidSpecError,
    WatcherSpec,
    camel,
)
from feedwatch.settings import FeedSettings, WatcherSettings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "feedwatcher.yaml"


def design_example() -> dict[str, Any]:
    """The full FeedWatcher of docs/operator.md (with the handler; the processor is the other choice)."""
    return {
        "apiVersion": "feedwatch.dev/v1alpha1",
        "kind": "FeedWatcher",
        "metadata": {"name": "resumes", "namespace": "hiring"},
        "spec": {
            "feed": "resumes",
            "database": {
                "urlSecretRef": {"name": "feedwatch-db", "key": "url"},
                "tablePrefix": "",
                "migrate": True,
            },
            "handler": {
                "url": "http://resume-handler.hiring.svc:8000/",
                "timeoutSeconds": 30,
                "connectTimeoutSeconds": 5,
                "healthPath": "/healthz",
                "headersSecretRef": {"name": "handler-auth", "key": "headers"},
            },
            "feedSettings": {
                "maxRetries": 5,
                "failurePolicy": "block",
                "autoClose": True,
                "manualCheckpoint": False,
            },
            "image": "registry/feedwatch:0.2.0",
            "imagePullPolicy": "IfNotPresent",
            "replicas": 1,
            "watcher": {
                "concurrency": 16,
                "batchSize": 500,
                "pollIntervalSeconds": 1,
                "leaseDurationSeconds": 30,
                "gracePeriodSeconds": 30,
                "logFormat": "json",
            },
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "podTemplate": {
                "metadata": {"labels": {"team": "hiring"}, "annotations": {"note": "x"}},
                "spec": {
                    "serviceAccountName": "resumes",
                    "nodeSelector": {"pool": "workers"},
                    "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                    "priorityClassName": "batch",
                    "imagePullSecrets": [{"name": "regcred"}],
                    "volumes": [{"name": "cache", "emptyDir": {}}],
                },
                "container": {
                    "env": [{"name": "TZ", "value": "UTC"}],
                    "envFrom": [{"configMapRef": {"name": "resumes-env"}}],
                    "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                },
            },
            "autoscaling": {
                "enabled": True,
                "minReplicaCount": 0,
                "maxReplicaCount": 10,
                "metric": "partitions",
                "targetBacklogPerReplica": 10,
                "activationBacklog": 0,
                "pollingInterval": 15,
                "cooldownPeriod": 300,
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
                "fallback": {"failureThreshold": 3, "replicas": 2},
            },
            "paused": False,
        },
    }


def minimal(**spec: Any) -> dict[str, Any]:
    """The smallest valid FeedWatcher, with ``spec`` fields added or replaced."""
    body: dict[str, Any] = {
        "metadata": {"name": "resumes", "namespace": "hiring"},
        "spec": {"database": {"urlSecretRef": {"name": "db"}}, "handler": {"url": "http://h:8000/"}},
    }
    body["spec"].update(spec)
    return body


# --- parsing and defaults -------------------------------------------------------------


def test_the_design_example_parses_field_by_field() -> None:
    spec = FeedWatcherSpec.from_object(design_example())
    assert (spec.name, spec.namespace, spec.feed) == ("resumes", "hiring", "resumes")
    assert spec.database.url_secret_ref == specs.UrlSecretRef(name="feedwatch-db", key="url")
    assert (spec.database.table_prefix, spec.database.migrate) == ("", True)
    assert spec.handler is not None
    assert spec.handler.url == "http://resume-handler.hiring.svc:8000/"
    assert (spec.handler.timeout_seconds, spec.handler.connect_timeout_seconds) == (30.0, 5.0)
    assert spec.handler.health_path == "/healthz"
    assert spec.handler.headers_secret_ref == specs.HeadersSecretRef(name="handler-auth", key="headers")
    assert spec.processor is None
    assert spec.feed_settings == {
        "max_retries": 5,
        "failure_policy": "block",
        "auto_close": True,
        "manual_checkpoint": False,
    }
    assert (spec.image, spec.image_pull_policy, spec.replicas) == (
        "registry/feedwatch:0.2.0",
        "IfNotPresent",
        1,
    )
    assert spec.resources == {"requests": {"cpu": "100m", "memory": "128Mi"}}
    assert spec.pod_template.labels == {"team": "hiring"}
    assert spec.pod_template.spec["serviceAccountName"] == "resumes"
    assert spec.pod_template.container["volumeMounts"][0]["mountPath"] == "/cache"
    assert spec.autoscaling is not None
    assert spec.autoscaling.fallback == specs.FallbackSpec(failure_threshold=3, replicas=2)
    assert spec.autoscaling.scale_down_stabilization_window == 300
    assert spec.autoscaling_enabled
    assert not spec.paused


def test_a_minimal_feedwatcher_gets_every_default_and_the_feed_is_its_name() -> None:
    spec = FeedWatcherSpec.from_object(minimal())
    assert spec.feed == "resumes"
    assert spec.database == specs.DatabaseSpec(
        url_secret_ref=specs.UrlSecretRef(name="db", key="url"), table_prefix="", migrate=True
    )
    assert spec.handler == specs.HandlerSpec(
        url="http://h:8000/",
        timeout_seconds=30.0,
        connect_timeout_seconds=5.0,
        health_path="",
        headers_secret_ref=None,
    )
    assert spec.watcher == WatcherSpec(
        concurrency=16,
        batch_size=500,
        poll_interval_seconds=1.0,
        lease_duration_seconds=30.0,
        grace_period_seconds=30.0,
        log_format="json",
    )
    assert (spec.image, spec.image_pull_policy, spec.replicas, spec.paused) == (
        None,
        "IfNotPresent",
        1,
        False,
    )
    assert spec.feed_settings == {} and spec.resources == {}
    assert spec.pod_template == specs.PodTemplateSpec()
    assert spec.autoscaling is None and not spec.autoscaling_enabled


def test_an_autoscaling_block_is_enabled_unless_it_says_otherwise() -> None:
    on = FeedWatcherSpec.from_object(minimal(autoscaling={}))
    assert on.autoscaling == AutoscalingSpec() and on.autoscaling_enabled
    assert on.autoscaling.fallback is None
    off = FeedWatcherSpec.from_object(minimal(autoscaling={"enabled": False, "maxReplicaCount": 3}))
    assert off.autoscaling is not None and off.autoscaling.max_replica_count == 3
    assert not off.autoscaling_enabled


def test_a_processor_with_its_image_replaces_the_handler() -> None:
    spec = FeedWatcherSpec.from_object(
        {
            "metadata": {
                "name": "x",
                "uid": "u-1",
                "generation": 4,
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {
                "database": {"urlSecretRef": {"name": "db", "key": "dsn"}},
                "processor": "mypkg.module:func",
                "image": "registry/custom:1",
            },
        }
    )
    assert (spec.processor, spec.image, spec.handler) == ("mypkg.module:func", "registry/custom:1", None)
    assert (spec.uid, spec.generation, spec.creation_timestamp) == ("u-1", 4, "2026-01-01T00:00:00Z")
    assert spec.database.url_secret_ref.key == "dsn"


def test_watcher_knobs_become_the_settings_variables_of_the_watch_command() -> None:
    spec = FeedWatcherSpec.from_object(minimal(watcher={"concurrency": 4, "pollIntervalSeconds": 0.5}))
    assert spec.watcher.env() == {
        "FEEDWATCH_CONCURRENCY": "4",
        "FEEDWATCH_BATCH_SIZE": "500",
        "FEEDWATCH_POLL_INTERVAL": "0.5",
        "FEEDWATCH_LEASE_DURATION": "30.0",
        "FEEDWATCH_GRACE_PERIOD": "30.0",
        "FEEDWATCH_LOG_FORMAT": "json",
    }
    assert spec.handler is not None
    assert spec.handler.env() == {
        "FEEDWATCH_HANDLER": "http://h:8000/",
        "FEEDWATCH_HANDLER_TIMEOUT": "30.0",
        "FEEDWATCH_HANDLER_CONNECT_TIMEOUT": "5.0",
        "FEEDWATCH_HANDLER_HEALTH_PATH": "",
    }
    # Each variable is one the watch command reads into WatcherSettings.
    settings = {f.name for f in fields(WatcherSettings)}
    for cls in (WatcherSpec, specs.HandlerSpec):
        named = {f.metadata["setting"] for f in fields(cls) if f.metadata["setting"]}
        assert named - {"handler"} <= settings


def test_secret_names_are_every_required_secret_the_pods_reference() -> None:
    body = design_example()
    body["spec"]["podTemplate"]["container"]["env"] += [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api-token", "key": "t"}}},
        {"name": "MAYBE", "valueFrom": {"secretKeyRef": {"name": "maybe", "key": "t", "optional": True}}},
    ]
    body["spec"]["podTemplate"]["container"]["envFrom"].append({"secretRef": {"name": "more-env"}})
    spec = FeedWatcherSpec.from_object(body)
    assert spec.secret_names() == {"feedwatch-db", "handler-auth", "api-token", "more-env"}


def test_the_spec_is_frozen_and_does_not_share_the_objects_dicts() -> None:
    body = design_example()
    spec = FeedWatcherSpec.from_object(body)
    body["spec"]["resources"]["requests"]["cpu"] = "9"
    assert spec.resources == {"requests": {"cpu": "100m", "memory": "128Mi"}}
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.replicas = 3  # type: ignore[misc]


def test_every_feed_setting_is_accepted_by_its_camel_case_name() -> None:
    given = {camel(f.name): f.default for f in fields(FeedSettings)}
    spec = FeedWatcherSpec.from_object(minimal(feedSettings=given))
    assert spec.feed_settings == dataclasses.asdict(FeedSettings())
    assert FeedSettings(**spec.feed_settings) == FeedSettings()


def test_one_backoff_bound_alone_is_checked_against_a_compatible_other() -> None:
    spec = FeedWatcherSpec.from_object(minimal(feedSettings={"backoffBase": 600}))
    assert spec.feed_settings == {"backoff_base": 600.0}


# --- errors that say what to fix -------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s: s["podTemplate"].update(
                container={"env": [{"name": "FEEDWATCH_CONCURRENCY", "value": "1"}]}
            ),
            "container.env sets FEEDWATCH_CONCURRENCY: the operator owns every FEEDWATCH_",
        ),
        (lambda s: s["feedSettings"].update(maxRetry=3), "spec.feedSettings.maxRetry is not a feed setting"),
        (
            lambda s: s["feedSettings"].update(max_retries=3),
            "spec.feedSettings.max_retries is not a feed setting",
        ),
        (
            lambda s: s["feedSettings"].update(maxRetries="3"),
            "spec.feedSettings.maxRetries must be a whole number",
        ),
        (
            lambda s: s["feedSettings"].update(autoClose="yes"),
            "spec.feedSettings.autoClose must be true or false",
        ),
        (
            lambda s: s["feedSettings"].update(failurePolicy="drop"),
            "failurePolicy must be one of block, skip",
        ),
        (lambda s: s["feedSettings"].update(maxRetries=-2), "spec.feedSettings: .*max_retries must be -1"),
        (
            lambda s: s["feedSettings"].update(backoffBase=10, backoffCap=5),
            "backoff_cap >= backoff_base",
        ),
        (lambda s: s.update(processor="m:f"), "set exactly one of spec.handler.url .* and spec.processor"),
        (lambda s: s.pop("handler"), "set exactly one of spec.handler.url"),
        (
            lambda s: (s.pop("handler"), s.pop("image"), s.update(processor="m:f")),
            "spec.processor needs spec.image",
        ),
        (
            lambda s: s["handler"].update(url="ftp://h/"),
            "spec.handler.url must be an http:// or https:// URL",
        ),
        (lambda s: s.pop("database"), "spec.database is required"),
        (lambda s: s["database"].pop("urlSecretRef"), "spec.database.urlSecretRef is required"),
        (lambda s: s["watcher"].update(concurrency="16"), "spec.watcher.concurrency must be a whole number"),
        (lambda s: s["watcher"].update(concurrency=0), "spec.watcher: .*concurrency must be >= 1"),
        (lambda s: s["watcher"].update(logFormat="xml"), "spec.watcher.logFormat must be one of text, json"),
        (lambda s: s["handler"].update(timeoutSeconds=True), "spec.handler.timeoutSeconds must be a number"),
        (lambda s: s.update(feed=""), None),  # "" is absent: the name applies (the CRD refuses it)
        (lambda s: s.update(feed="f" * 201), "spec.feed must be 1 to 200 characters"),
        (
            lambda s: s["autoscaling"].update(minReplicaCount=5, maxReplicaCount=2),
            "minReplicaCount \\(5\\) is above maxReplicaCount \\(2\\)",
        ),
        (
            lambda s: s["autoscaling"].update(fallback={"replicas": 11}),
            "fallback.replicas \\(11\\) is above maxReplicaCount \\(10\\)",
        ),
        (lambda s: s["autoscaling"].update(fallback={}), "spec.autoscaling.fallback.replicas is required"),
        (
            lambda s: s["autoscaling"].update(metric="cpu"),
            "spec.autoscaling.metric must be one of partitions, items",
        ),
        (lambda s: s.update(resources=["cpu"]), "spec.resources must be an object"),
    ],
)
def test_a_spec_the_schema_let_through_is_refused_with_what_to_fix(change: Any, message: str | None) -> None:
    body = design_example()
    change(body["spec"])
    if message is None:
        assert FeedWatcherSpec.from_object(body).feed == "resumes"
        return
    with pytest.raises(InvalidSpecError, match=message):
        FeedWatcherSpec.from_object(body)


def test_a_long_name_and_a_missing_spec_are_refused() -> None:
    body = minimal()
    body["metadata"]["name"] = "n" * 64
    with pytest.raises(InvalidSpecError, match=r"metadata\.name is 64 characters; use at most 63"):
        FeedWatcherSpec.from_object(body)
    with pytest.raises(InvalidSpecError, match="has no spec"):
        FeedWatcherSpec.from_object({"metadata": {"name": "x"}})


def test_invalid_spec_error_is_a_configuration_error() -> None:
    from feedwatch.errors import ConfigurationError

    assert issubclass(InvalidSpecError, ConfigurationError)


# --- the CRD and the dataclasses agree -------------------------------------------------


def _crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return loaded


def _root_schema() -> dict[str, Any]:
    (version,) = _crd()["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _schema_at(schema: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any] | None:
    found: Mapping[str, Any] | None = schema
    for key in path:
        found = found.get("properties", {}).get(key) if found is not None else None
    return found


@dataclasses.dataclass
class CodeField:
    path: tuple[str, ...]
    hint: Any
    field: dataclasses.Field[Any]
    parent_path: tuple[str, ...]


def _code_fields(cls: type[Any], prefix: tuple[str, ...]) -> Iterator[CodeField]:
    """Every field the operator reads, as a path from the FeedWatcher's root; nested specs walked."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        path = prefix + f.metadata["path"]
        hint = _unoptional(hints[f.name])
        yield CodeField(path, hint, f, prefix)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            yield from _code_fields(hint, path)


def _unoptional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    return hint


def _is_opaque(hint: Any) -> bool:
    return hint is Mapping or typing.get_origin(hint) is Mapping


SPEC_FIELDS = [c for c in _code_fields(FeedWatcherSpec, ()) if c.path[0] == "spec"]


def _crd_paths(schema: Mapping[str, Any], prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    for key, sub in schema.get("properties", {}).items():
        yield (*prefix, key)
        yield from _crd_paths(sub, (*prefix, key))


def test_every_field_the_operator_reads_is_in_the_crd() -> None:
    root = _root_schema()
    missing = [".".join(c.path) for c in SPEC_FIELDS if _schema_at(root, c.path) is None]
    assert missing == [], f"fields specs.py reads that crds/feedwatcher.yaml lacks: {missing}"


def test_every_crd_field_is_read_by_the_operator() -> None:
    code = {c.path for c in SPEC_FIELDS}
    opaque = {c.path for c in SPEC_FIELDS if _is_opaque(c.hint)}
    spec_schema = _root_schema()["properties"]["spec"]
    unread = []
    for path in _crd_paths(spec_schema, ("spec",)):
        if path in code or any(path[: len(o)] == o for o in opaque):
            continue
        if any(c[: len(path)] == path for c in code):
            continue  # an object on the way to fields that are read (podTemplate.metadata)
        unread.append(".".join(path))
    assert unread == [], f"CRD fields specs.py never reads: {unread}"


def _literal_values(hint: Any) -> set[Any] | None:
    return set(typing.get_args(hint)) if typing.get_origin(hint) is Literal else None


def _schema_type(hint: Any) -> str:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return "object"
    if _is_opaque(hint):
        return "object"
    if _literal_values(hint) is not None:
        return "string"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}[hint]


def test_every_default_type_enum_and_required_field_agrees_with_the_crd() -> None:
    root = _root_schema()
    problems = []
    for c in SPEC_FIELDS:
        where = ".".join(c.path)
        schema = _schema_at(root, c.path)
        assert schema is not None, where
        if schema.get("type") != _schema_type(c.hint):
            problems.append(f"{where}: CRD type {schema.get('type')}, code {_schema_type(c.hint)}")
        literal = _literal_values(c.hint)
        if literal is not None and set(schema.get("enum", ())) != literal:
            problems.append(f"{where}: CRD enum {schema.get('enum')}, code {sorted(literal)}")
        f = c.field
        crd_default = schema.get("default", MISSING)
        if c.path == ("spec", "feed"):
            ok = crd_default is MISSING  # "" stands for metadata.name, which no schema default can say
        elif f.default is not MISSING and f.default is not None:
            ok = crd_default == f.default and isinstance(crd_default, bool) == isinstance(f.default, bool)
        elif f.default_factory is not MISSING and dataclasses.is_dataclass(c.hint):
            ok = crd_default in ({}, MISSING)  # {} lets the API server fill in the nested defaults
        else:
            ok = crd_default is MISSING  # None, an empty mapping, or required: no CRD default
        if not ok:
            shown = f.default if f.default is not MISSING else f.default_factory
            problems.append(f"{where}: CRD default {crd_default!r}, specs.py {shown!r}")
        parent = _schema_at(root, c.path[:-1]) if len(c.path) > 1 else root
        required_in_code = f.default is MISSING and f.default_factory is MISSING
        required_in_crd = parent is not None and c.path[-1] in parent.get("required", ())
        if required_in_code != required_in_crd:
            problems.append(f"{where}: required in CRD {required_in_crd}, in specs.py {required_in_code}")
    assert problems == []


def test_feed_settings_in_the_crd_are_exactly_the_feed_settings_in_camel_case() -> None:
    schema = _schema_at(_root_schema(), ("spec", "feedSettings"))
    assert schema is not None
    hints = typing.get_type_hints(FeedSettings)
    expected = {camel(f.name): _schema_type(hints[f.name]) for f in fields(FeedSettings)}
    assert {k: v["type"] for k, v in schema["properties"].items()} == expected
    assert schema["properties"]["failurePolicy"]["enum"] == ["block", "skip"]
    assert all("default" not in v for v in schema["properties"].values()), (
        "feedSettings has no defaults: only the fields given are applied"
    )


def test_pod_template_parts_in_the_crd_are_the_ones_the_operator_merges() -> None:
    root = _root_schema()
    pod_spec = _schema_at(root, ("spec", "podTemplate", "spec"))
    container = _schema_at(root, ("spec", "podTemplate", "container"))
    assert pod_spec is not None and container is not None
    assert set(pod_spec["properties"]) == set(POD_SPEC_FIELDS)
    assert set(container["properties"]) == set(CONTAINER_FIELDS)


def _walk(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


def test_every_crd_field_has_a_description_for_kubectl_explain() -> None:
    undocumented = [
        path
        for path, schema in _walk(_root_schema(), "FeedWatcher")
        if path != "FeedWatcher.metadata" and not path.endswith("[]") and not schema.get("description")
    ]
    assert undocumented == []


def _shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_kubectl_explain_states_every_default() -> None:
    unstated = [
        f"{path}: {schema['default']!r}"
        for path, schema in _walk(_root_schema(), "FeedWatcher")
        if schema.get("default") not in (None, {}, "")
        and not schema["description"].endswith(f"Default: {_shown(schema['default'])}.")
    ]
    assert unstated == [], "end the description with 'Default: <value>.'"


def test_the_crd_names_and_subresources_are_the_designs() -> None:
    crd = _crd()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "feedwatchers.feedwatch.dev"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("feedwatch.dev", "Namespaced")
    assert spec["names"] == {
        "kind": "FeedWatcher",
        "listKind": "FeedWatcherList",
        "plural": "feedwatchers",
        "singular": "feedwatcher",
        "shortNames": ["fw"],
        "categories": ["feedwatch"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Feed": ".status.feed",
        "Replicas": ".status.replicas",
        "Ready": ".status.readyReplicas",
        "Backlog": ".status.backlog.partitions",
        "Status": '.status.conditions[?(@.type=="Ready")].reason',
        "Age": ".metadata.creationTimestamp",
    }
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert "kopf" not in status, "kopf keeps its progress in annotations"
    assert set(status) == {
        "observedGeneration",
        "feed",
        "conditions",
        "replicas",
        "readyReplicas",
        "selector",
        "desiredReplicas",
        "lastScaleTime",
        "lastActiveTime",
        "backlog",
    }
    assert status["conditions"]["x-kubernetes-list-type"] == "map"
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_the_design_example_is_not_changed_by_parsing_it() -> None:
    body = design_example()
    before = copy.deepcopy(body)
    FeedWatcherSpec.from_object(body)
    assert body == before
