"""The FeedWatcher -> Deployment mapping (pure: no API server)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from feedwatch.operator import deployments
from feedwatch.operator.specs import FeedWatcherSpec

pytestmark = pytest.mark.unit

UID = "0b5c4a3e-1111-2222-3333-444455556666"


def _body(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "feedwatch.dev/v1alpha1",
        "kind": "FeedWatcher",
        "metadata": {
            "name": "resumes",
            "namespace": "hiring",
            "uid": UID,
            "generation": 3,
            "creationTimestamp": "2026-12-03T06:00:00Z",
        },
        "spec": {
            "database": {"urlSecretRef": {"name": "feedwatch-db"}, "tablePrefix": "hr_"},
            "handler": {"url": "http://resume-handler.hiring.svc:8000/"},
        },
    }
    body["spec"].update(spec)
    return body


def _build(replicas: int | None = 2, **spec: Any) -> dict[str, Any]:
    return deployments.build_deployment(
        FeedWatcherSpec.from_object(_body(**spec)),
        replicas=replicas,
        default_image="feedwatch:9.9.9",
        secrets_checksum="abc",
    )


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _env(manifest: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(manifest)["env"]}


def test_the_deployment_is_named_labelled_and_owned_like_its_feedwatcher() -> None:
    manifest = _build()
    meta = manifest["metadata"]
    assert (meta["name"], meta["namespace"]) == ("resumes", "hiring")
    assert meta["labels"] == {
        "app.kubernetes.io/name": "feedwatch-watcher",
        "app.kubernetes.io/instance": "resumes",
        "app.kubernetes.io/managed-by": "feedwatch-operator",
        "feedwatch.dev/feedwatcher": "resumes",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "feedwatch.dev/v1alpha1",
            "kind": "FeedWatcher",
            "name": "resumes",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert manifest["spec"]["selector"] == {"matchLabels": {"feedwatch.dev/feedwatcher": "resumes"}}
    assert manifest["spec"]["replicas"] == 2
    assert manifest["spec"]["template"]["metadata"]["labels"] == meta["labels"]


def test_replicas_none_leaves_the_field_out() -> None:
    assert "replicas" not in _build(replicas=None)["spec"]


def test_the_container_runs_feedwatch_watch_with_the_url_only_by_secret_key_ref() -> None:
    manifest = _build(watcher={"concurrency": 4, "gracePeriodSeconds": 20})
    container = _container(manifest)
    assert container["image"] == "feedwatch:9.9.9"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert (container["command"], container["args"]) == (["feedwatch"], ["watch"])
    env = _env(manifest)
    assert env["FEEDWATCH_DATABASE_URL"] == {"secretKeyRef": {"name": "feedwatch-db", "key": "url"}}
    assert env["FEEDWATCH_FEED"] == "resumes"
    assert env["FEEDWATCH_TABLE_PREFIX"] == "hr_"
    assert env["FEEDWATCH_HANDLER"] == "http://resume-handler.hiring.svc:8000/"
    assert env["FEEDWATCH_CONCURRENCY"] == "4"
    assert float(env["FEEDWATCH_GRACE_PERIOD"]) == 20
    assert env["FEEDWATCH_HEALTH_PORT"] == "8080"
    assert env["HOME"] == "/tmp"
    assert "FEEDWATCH_PROCESSOR" not in env
    assert manifest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 35
    assert "mysql" not in str(manifest)  # the URL itself never appears


def test_a_processor_and_a_custom_image_replace_the_handler() -> None:
    body = _body(processor="mypkg.module:func", image="registry/custom:1")
    del body["spec"]["handler"]
    spec = FeedWatcherSpec.from_object(body)
    manifest = deployments.build_deployment(spec, replicas=1, default_image="x", secrets_checksum="c")
    env = _env(manifest)
    assert env["FEEDWATCH_PROCESSOR"] == "mypkg.module:func"
    assert "FEEDWATCH_HANDLER" not in env
    assert _container(manifest)["image"] == "registry/custom:1"


def test_handler_options_and_headers_secret_become_settings_variables() -> None:
    manifest = _build(
        handler={
            "url": "https://h.example/",
            "timeoutSeconds": 12,
            "healthPath": "/healthz",
            "headersSecretRef": {"name": "handler-auth"},
        }
    )
    env = _env(manifest)
    assert float(env["FEEDWATCH_HANDLER_TIMEOUT"]) == 12
    assert env["FEEDWATCH_HANDLER_HEALTH_PATH"] == "/healthz"
    assert env["FEEDWATCH_HANDLER_HEADERS"] == {"secretKeyRef": {"name": "handler-auth", "key": "headers"}}


def test_probes_and_the_restricted_security_profile() -> None:
    manifest = _build()
    container = _container(manifest)
    pod = manifest["spec"]["template"]["spec"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"}]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "feedwatch-tmp", "emptyDir": {}} in pod["volumes"]
    assert {"name": "feedwatch-tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_the_pod_template_is_merged_and_cannot_override_the_operators_labels() -> None:
    manifest = _build(
        resources={"requests": {"cpu": "100m"}},
        podTemplate={
            "metadata": {
                "labels": {"team": "hr", "feedwatch.dev/feedwatcher": "other"},
                "annotations": {"a": "b"},
            },
            "spec": {
                "serviceAccountName": "resumes",
                "nodeSelector": {"disk": "ssd"},
                "volumes": [{"name": "certs", "secret": {"secretName": "certs"}}],
            },
            "container": {
                "env": [{"name": "TZ", "value": "UTC"}],
                "envFrom": [{"configMapRef": {"name": "extra"}}],
                "volumeMounts": [{"name": "certs", "mountPath": "/certs"}],
            },
        },
    )
    template = manifest["spec"]["template"]
    assert template["metadata"]["labels"]["team"] == "hr"
    assert template["metadata"]["labels"]["feedwatch.dev/feedwatcher"] == "resumes"
    assert template["metadata"]["annotations"] == {"a": "b", "feedwatch.dev/secrets-checksum": "abc"}
    pod = template["spec"]
    assert pod["serviceAccountName"] == "resumes"
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert [v["name"] for v in pod["volumes"]] == ["feedwatch-tmp", "certs"]
    container = _container(manifest)
    assert container["env"][-1] == {"name": "TZ", "value": "UTC"}
    assert container["envFrom"] == [{"configMapRef": {"name": "extra"}}]
    assert [m["name"] for m in container["volumeMounts"]] == ["feedwatch-tmp", "certs"]
    assert container["resources"] == {"requests": {"cpu": "100m"}}


def test_the_secrets_checksum_follows_uid_and_resource_version_only() -> None:
    one = deployments.secrets_checksum({"db": ("uid-1", "10")})
    assert one == deployments.secrets_checksum({"db": ("uid-1", "10")})
    assert one != deployments.secrets_checksum({"db": ("uid-1", "11")})
    assert one != deployments.secrets_checksum({"db": ("uid-2", "10")})
    assert one != deployments.secrets_checksum({"db": ("uid-1", "10"), "auth": ("u", "1")})


def _live(desired: dict[str, Any]) -> dict[str, Any]:
    """What the API server returns: our fields plus defaults and status."""
    live = copy.deepcopy(desired)
    live["metadata"]["resourceVersion"] = "42"
    live["metadata"]["managedFields"] = [{"manager": "feedwatch-operator"}]
    live["spec"]["strategy"] = {"type": "RollingUpdate"}
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["terminationMessagePath"] = "/dev/termination-log"
    container["resources"] = {"requests": {"cpu": "100m"}}  # normalised from 0.1
    # An empty env value is dropped (omitempty), e.g. FEEDWATCH_TABLE_PREFIX "".
    container["env"] = [{k: v for k, v in e.items() if v != ""} for e in container["env"]]
    live["status"] = {"replicas": 2}
    return live


def test_an_unchanged_deployment_needs_no_apply_and_drift_does() -> None:
    desired = deployments.with_applied_hash(
        _build(resources={"requests": {"cpu": 0.1}}, database={"urlSecretRef": {"name": "db"}})
    )
    live = _live(desired)
    assert "value" not in live["spec"]["template"]["spec"]["containers"][0]["env"][2]
    assert not deployments.needs_apply(desired, live)
    assert deployments.needs_apply(desired, None)

    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    assert deployments.needs_apply(desired, scaled)

    edited = copy.deepcopy(live)
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    assert deployments.needs_apply(desired, edited)

    relabelled = copy.deepcopy(live)
    del relabelled["metadata"]["labels"]["app.kubernetes.io/instance"]
    assert deployments.needs_apply(desired, relabelled)


def test_a_spec_that_only_removes_a_field_is_applied() -> None:
    before = deployments.with_applied_hash(_build(podTemplate={"spec": {"nodeSelector": {"disk": "ssd"}}}))
    after = deployments.with_applied_hash(_build())
    assert deployments.needs_apply(after, _live(before))


def test_ownership_is_the_controller_reference_with_the_feedwatchers_uid() -> None:
    manifest = _build()
    assert deployments.owned_by(manifest, UID)
    assert not deployments.owned_by(manifest, "another-uid")
    assert not deployments.owned_by({"metadata": {}}, UID)
