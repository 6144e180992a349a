"""The FeedWatcher CRD against a real kube-apiserver: it installs, explains itself,
fills in specs.py's defaults, and refuses bad objects with messages that say what to fix.

No operator runs here: every check is the API server's own (schema, CEL rules,
subresources, printer columns).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from feedwatch.operator.specs import (
    AutoscalingSpec,
    DatabaseSpec,
    FallbackSpec,
    FeedWatcherSpec,
    HandlerSpec,
    WatcherSpec,
)
from tests.support.kubernetes import KubeEnv
from tests.support.waiting import wait_until
from tests.unit.test_operator_specs import design_example

pytestmark = pytest.mark.kubernetes

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "feedwatcher.yaml"
CRD_NAME = "feedwatchers.feedwatch.dev"
GROUP, VERSION, PLURAL = "feedwatch.dev", "v1alpha1", "feedwatchers"


@pytest.fixture(scope="module")
def applied_crd(kube: KubeEnv) -> KubeEnv:
    """The CRD applied by this module itself (idempotently) and Established.

    Named apart from tests/support/kube_operator.py's ``crd`` so that this module checks
    the install path (server-side apply, Established, discovery) on its own.
    """
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    kube.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    # kubectl's discovery and the published OpenAPI follow the CRD a moment later.
    wait_until(
        lambda: kube.kubectl("explain", "fw.spec.autoscaling", check=False).returncode == 0,
        timeout=60,
        message="kubectl explain to know FeedWatcher",
    )
    return kube


def _minimal(name: str = "resumes", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FeedWatcher",
        "metadata": {"name": name},
        "spec": {"database": {"urlSecretRef": {"name": "db"}}, "handler": {"url": "http://h:8000/"}},
    }
    body["spec"].update(spec)
    return body


def _create(kube: KubeEnv, namespace: str, body: dict[str, Any]) -> Any:
    return kube.kubectl(
        "create", "-n", namespace, "-f", "-", "-o", "json", input=json.dumps(body), check=False
    )


def _get(kube: KubeEnv, namespace: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = kube.custom_objects.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return got


def _patch(kube: KubeEnv, namespace: str, name: str, patch: dict[str, Any], *extra: str) -> Any:
    return kube.kubectl(
        "patch", "-n", namespace, f"fw/{name}", "--type=merge", "-p", json.dumps(patch), *extra, check=False
    )


def test_the_crd_is_established_with_its_names_and_category(applied_crd: KubeEnv, namespace: str) -> None:
    installed = applied_crd.apiextensions_v1.read_custom_resource_definition(CRD_NAME)
    conditions = {c.type: c.status for c in installed.status.conditions}
    assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
    resources = applied_crd.kubectl("api-resources", "--api-group", GROUP, "-o", "wide").stdout
    assert "feedwatchers" in resources and "fw" in resources and "FeedWatcher" in resources
    assert "feedwatch" in resources.split("feedwatchers", 1)[1]  # the category column
    assert _create(applied_crd, namespace, _minimal()).returncode == 0
    by_category = applied_crd.kubectl("get", "feedwatch", "-n", namespace, "-o", "name").stdout
    assert by_category.strip() == "feedwatcher.feedwatch.dev/resumes"


def test_kubectl_explain_prints_the_field_descriptions(applied_crd: KubeEnv) -> None:
    out = " ".join(applied_crd.kubectl("explain", "fw.spec.autoscaling").stdout.split())
    assert "Scaling on the feed's backlog, with KEDA's names and meanings." in out
    for field_name, text in (
        ("minReplicaCount", "0 scales to zero while the feed is idle"),
        ("metric", "What the backlog counts"),
        ("cooldownPeriod", "Seconds the feed must be inactive before 1 -> 0"),
        ("fallback", "after failureThreshold consecutive failed backlog reads"),
    ):
        assert field_name in out
        detail = applied_crd.kubectl("explain", f"fw.spec.autoscaling.{field_name}").stdout
        assert text in " ".join(detail.split()), detail
    status = " ".join(applied_crd.kubectl("explain", "fw.status.backlog.oldestItemAgeSeconds").stdout.split())
    assert "Age of the oldest such item, in seconds." in status


def _change(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set (or with ``...``, delete) ``spec.<path>`` of a valid FeedWatcher."""

    def apply(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = body["spec"]
        for key in parents:
            target = target.setdefault(key, {})
        if value is ...:
            target.pop(last)
        else:
            target[last] = value

    return apply


def _rename(name: str) -> Callable[[dict[str, Any]], None]:
    def apply(body: dict[str, Any]) -> None:
        body["metadata"]["name"] = name

    return apply


REFUSALS = [
    pytest.param(_change("autoscaling.metric", "cpu"), 'Unsupported value: "cpu"', id="bad-metric-enum"),
    pytest.param(
        _change("feedSettings.failurePolicy", "drop"),
        'supported values: "block", "skip"',
        id="bad-policy-enum",
    ),
    pytest.param(
        _change("watcher.logFormat", "xml"), 'supported values: "text", "json"', id="bad-log-format-enum"
    ),
    pytest.param(_change("imagePullPolicy", "Sometimes"), "Unsupported value", id="bad-pull-policy-enum"),
    pytest.param(
        _change("autoscaling.minReplicaCount", 11),
        "spec.autoscaling.minReplicaCount must be <= maxReplicaCount",
        id="min-above-max",
    ),
    pytest.param(
        _change("watcher.concurrency", -1),
        "spec.watcher.concurrency in body should be greater than or equal to 1",
        id="negative-concurrency",
    ),
    pytest.param(_change("watcher.concurrency", 10001), "less than or equal to 10000", id="huge-concurrency"),
    pytest.param(_change("replicas", 1001), "less than or equal to 1000", id="too-many-replicas"),
    pytest.param(
        _change("handler.url", "ftp://files.example/"),
        "spec.handler.url must be an http:// or https:// URL with a host",
        id="ftp-handler",
    ),
    pytest.param(_change("handler.url", "not a url"), "must be an http:// or https:// URL", id="no-url"),
    pytest.param(
        _change("processor", "mypkg.module:func"),
        "spec.handler and spec.processor are both set: keep exactly one",
        id="handler-and-processor",
    ),
    pytest.param(_change("handler", ...), "set exactly one of spec.handler.url", id="neither"),
    pytest.param(
        lambda b: (b["spec"].pop("handler"), b["spec"].pop("image"), b["spec"].update(processor="m:f")),
        "spec.processor needs spec.image",
        id="processor-without-image",
    ),
    pytest.param(_change("processor", "no colon"), "spec.processor in body should match", id="bad-processor"),
    pytest.param(
        _change("autoscaling.fallback.replicas", 11),
        "spec.autoscaling.fallback.replicas must be <= maxReplicaCount",
        id="fallback-above-max",
    ),
    pytest.param(_rename("n" * 64), "metadata.name must be at most 63 characters", id="64-char-name"),
    pytest.param(
        _change("podTemplate.container.env", [{"name": "FEEDWATCH_CONCURRENCY", "value": "1"}]),
        "spec.podTemplate.container.env may not set FEEDWATCH_* variables",
        id="feedwatch-env",
    ),
    pytest.param(
        _change("feedSettings", {"backoffBase": 10, "backoffCap": 5}),
        "spec.feedSettings.backoffCap must be >= backoffBase",
        id="backoff-cap-below-base",
    ),
    pytest.param(
        _change("feedSettings.maxRetries", -2), "greater than or equal to -1", id="max-retries-below-forever"
    ),
    pytest.param(_change("feed", ""), "spec.feed in body should be at least 1 chars long", id="empty-feed"),
    pytest.param(
        _change("database.tablePrefix", "Team-"),
        "spec.database.tablePrefix in body should match",
        id="bad-prefix",
    ),
    pytest.param(
        _change("database.urlSecretRef.name", "Not_A_Name"),
        "urlSecretRef.name in body should match",
        id="bad-secret",
    ),
    pytest.param(_change("database", ...), "spec.database: Required value", id="no-database"),
    pytest.param(
        _change("autoscaling.fallback", {"failureThreshold": 2}),
        "spec.autoscaling.fallback.replicas: Required value",
        id="fallback-without-replicas",
    ),
]


@pytest.mark.parametrize(("change", "message"), REFUSALS)
def test_the_api_server_refuses_an_invalid_feedwatcher_with_the_rules_message(
    applied_crd: KubeEnv, namespace: str, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    body = design_example()
    body["metadata"] = {"name": "resumes"}
    change(body)
    proc = _create(applied_crd, namespace, body)
    assert proc.returncode != 0, f"the API server accepted {json.dumps(body['spec'])}"
    error = " ".join(proc.stderr.split())
    assert message in error, error
    # Nothing was stored.
    assert applied_crd.kubectl("get", "fw", "-n", namespace, "-o", "name").stdout.strip() == ""


def test_the_feed_cannot_be_changed_added_or_removed_after_creation(
    applied_crd: KubeEnv, namespace: str
) -> None:
    assert _create(applied_crd, namespace, _minimal("named", feed="resumes")).returncode == 0
    assert _create(applied_crd, namespace, _minimal("unnamed")).returncode == 0
    message = "spec.feed cannot be changed, added or removed after creation"
    for name, patch in (
        ("named", {"spec": {"feed": "other"}}),
        ("named", {"spec": {"feed": None}}),
        ("unnamed", {"spec": {"feed": "unnamed"}}),
    ):
        proc = _patch(applied_crd, namespace, name, patch)
        assert proc.returncode != 0 and message in " ".join(proc.stderr.split()), (name, patch, proc.stderr)
    assert _get(applied_crd, namespace, "named")["spec"]["feed"] == "resumes"
    assert "feed" not in _get(applied_crd, namespace, "unnamed")["spec"]
    # Other fields still change, and the unchanged feed passes the rule.
    assert (
        _patch(applied_crd, namespace, "named", {"spec": {"replicas": 2, "feed": "resumes"}}).returncode == 0
    )
    assert _get(applied_crd, namespace, "named")["spec"]["replicas"] == 2


def test_the_table_prefix_cannot_be_changed_or_removed_after_creation(
    applied_crd: KubeEnv, namespace: str
) -> None:
    body = _minimal("prefixed", database={"urlSecretRef": {"name": "db"}, "tablePrefix": "team_"})
    assert _create(applied_crd, namespace, body).returncode == 0
    message = "spec.database.tablePrefix cannot be changed, added or removed after creation"
    for patch in ({"tablePrefix": "other_"}, {"tablePrefix": None}, {"tablePrefix": ""}):
        proc = _patch(applied_crd, namespace, "prefixed", {"spec": {"database": patch}})
        assert proc.returncode != 0 and message in " ".join(proc.stderr.split()), (patch, proc.stderr)
    assert _get(applied_crd, namespace, "prefixed")["spec"]["database"]["tablePrefix"] == "team_"
    assert (
        _patch(applied_crd, namespace, "prefixed", {"spec": {"database": {"migrate": False}}}).returncode == 0
    )


def test_the_designs_full_example_is_accepted_as_written(applied_crd: KubeEnv, namespace: str) -> None:
    body = design_example()
    body["metadata"].pop("namespace")
    proc = _create(applied_crd, namespace, body)
    assert proc.returncode == 0, proc.stderr
    stored = _get(applied_crd, namespace, "resumes")
    assert stored["spec"] == body["spec"], "nothing pruned, nothing added: every field was given"
    assert FeedWatcherSpec.from_object(stored) == FeedWatcherSpec.from_object(
        {**body, "metadata": stored["metadata"]}
    )


def _camel_defaults(cls: type[Any], **required: Any) -> dict[str, Any]:
    """What the API server should fill in for ``cls``: specs.py's defaults under the CRD's names."""
    out: dict[str, Any] = dict(required)
    for f in fields(cls):
        if f.default is None or f.name in required or not isinstance(f.default, bool | int | float | str):
            continue
        target = out
        *parents, last = f.metadata["path"]
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = f.default
    return out


def test_defaults_are_filled_in_as_specs_py_says(applied_crd: KubeEnv, namespace: str) -> None:
    body = _minimal(
        "defaults",
        autoscaling={"fallback": {"replicas": 1}},
        handler={"url": "http://h:8000/", "headersSecretRef": {"name": "auth"}},
    )
    assert _create(applied_crd, namespace, body).returncode == 0
    spec = _get(applied_crd, namespace, "defaults")["spec"]
    assert spec["database"] == _camel_defaults(DatabaseSpec, urlSecretRef={"name": "db", "key": "url"})
    assert spec["handler"] == _camel_defaults(
        HandlerSpec, url="http://h:8000/", headersSecretRef={"name": "auth", "key": "headers"}
    )
    assert spec["watcher"] == _camel_defaults(WatcherSpec)
    assert spec["autoscaling"] == _camel_defaults(
        AutoscalingSpec, fallback=_camel_defaults(FallbackSpec, replicas=1)
    )
    top = {k: v for k, v in spec.items() if k not in ("database", "handler", "watcher", "autoscaling")}
    assert top == {"imagePullPolicy": "IfNotPresent", "replicas": 1, "paused": False}
    defaults = FeedWatcherSpec.from_object({"metadata": {"name": "defaults"}, "spec": body["spec"]})
    assert (defaults.image_pull_policy, defaults.replicas, defaults.paused) == ("IfNotPresent", 1, False)


def test_the_status_subresource_keeps_the_designs_status_and_feeds_the_columns(
    applied_crd: KubeEnv, namespace: str
) -> None:
    assert _create(applied_crd, namespace, _minimal()).returncode == 0
    status = {
        "observedGeneration": 1,
        "feed": "resumes",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "DeploymentAvailable",
                "message": "3 of 3 watchers ready",
                "lastTransitionTime": "2026-12-03T06:00:00Z",
                "observedGeneration": 1,
            }
        ],
        "replicas": 3,
        "readyReplicas": 3,
        "selector": "feedwatch.dev/feedwatcher=resumes",
        "desiredReplicas": 3,
        "lastScaleTime": "2026-12-03T06:00:00Z",
        "lastActiveTime": "2026-12-03T06:00:00Z",
        "backlog": {
            "partitions": 42,
            "items": 9120,
            "oldestItemAgeSeconds": 12.5,
            "readTime": "2026-12-03T06:00:00Z",
        },
    }
    proc = _patch(
        applied_crd,
        namespace,
        "resumes",
        {"status": {**status, "kopf": {"progress": {}}}},
        "--subresource=status",
    )
    assert proc.returncode == 0, proc.stderr
    stored = _get(applied_crd, namespace, "resumes")
    assert stored["status"] == status, "every documented status field kept; undeclared status.kopf pruned"
    table = applied_crd.kubectl("get", "fw", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "FEED", "REPLICAS", "READY", "BACKLOG", "STATUS", "AGE"]
    assert table[1].split()[:6] == ["resumes", "resumes", "3", "3", "42", "DeploymentAvailable"]


def test_kubectl_scale_sets_spec_replicas_through_the_scale_subresource(
    applied_crd: KubeEnv, namespace: str
) -> None:
    assert _create(applied_crd, namespace, _minimal()).returncode == 0
    applied_crd.kubectl("scale", "-n", namespace, "fw/resumes", "--replicas=3")
    assert _get(applied_crd, namespace, "resumes")["spec"]["replicas"] == 3
    proc = applied_crd.kubectl("scale", "-n", namespace, "fw/resumes", "--replicas=1001", check=False)
    assert proc.returncode != 0 and "less than or equal to 1000" in proc.stderr
    scale = json.loads(
        applied_crd.kubectl(
            "get", "--raw", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/resumes/scale"
        ).stdout
    )
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3


def test_a_spec_without_optional_blocks_round_trips_through_the_parser(
    applied_crd: KubeEnv, namespace: str
) -> None:
    body = _minimal("plain")
    assert _create(applied_crd, namespace, copy.deepcopy(body)).returncode == 0
    parsed = FeedWatcherSpec.from_object(_get(applied_crd, namespace, "plain"))
    assert parsed.feed == "plain" and parsed.autoscaling is None and parsed.watcher == WatcherSpec()
