"""The Kubernetes test environment itself: a real API server, controllers,
scheduler and kwok-simulated node, plus kubectl and helm from the cache."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.kubernetes import KubeEnv
from tests.support.waiting import wait_until

pytestmark = pytest.mark.kubernetes

FIXTURES = Path(__file__).parent / "fixtures"
TRIVIAL_CHART = FIXTURES / "trivial-chart"
APP_LABEL = "feedwatch.test/app"


def _deployment(name: str, replicas: int) -> client.V1Deployment:
    labels = {APP_LABEL: name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[
                        # never pulled: kwok runs no containers
                        client.V1Container(name="app", image="registry.invalid/feedwatch/app:1")
                    ]
                ),
            ),
        ),
    )


def _ready_pods(kube: KubeEnv, namespace: str, name: str) -> list[Any]:
    pods = kube.core_v1.list_namespaced_pod(namespace, label_selector=f"{APP_LABEL}={name}").items
    return [
        pod
        for pod in pods
        if pod.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    ]


def _ready_replicas(kube: KubeEnv, namespace: str, name: str) -> int:
    status = kube.apps_v1.read_namespaced_deployment_status(name, namespace).status
    return status.ready_replicas or 0


def _replicasets_of(kube: KubeEnv, namespace: str, deployment_uid: str) -> list[Any]:
    return [
        rs
        for rs in kube.apps_v1.list_namespaced_replica_set(namespace).items
        if any(ref.uid == deployment_uid for ref in rs.metadata.owner_references or [])
    ]


def _wait_for_ready_pods(kube: KubeEnv, namespace: str, name: str, count: int) -> list[Any]:
    def check() -> list[Any] | None:
        pods = _ready_pods(kube, namespace, name)
        all_pods = kube.core_v1.list_namespaced_pod(namespace, label_selector=f"{APP_LABEL}={name}").items
        live = [p for p in all_pods if p.metadata.deletion_timestamp is None]
        if len(pods) == count and len(live) == count and _ready_replicas(kube, namespace, name) == count:
            return pods
        return None

    return wait_until(check, timeout=60, message=f"{count} ready pods of deployment {name}")


def test_the_api_server_is_ready_and_serves_the_pinned_kubernetes_version(kube: KubeEnv) -> None:
    assert kube.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    version = client.VersionApi(kube.api_client).get_code()
    assert version.git_version == kube.versions["kubernetes"]
    assert kube.server.startswith("https://127.0.0.1:")
    client_version = json.loads(kube.kubectl("version", "--client", "-o", "json").stdout)
    assert client_version["clientVersion"]["gitVersion"] == kube.versions["kubernetes"]


def test_the_admin_user_is_authenticated_by_client_certificate_and_authorized_by_rbac(
    kube: KubeEnv, namespace: str
) -> None:
    assert kube.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout == (
        "feedwatch-admin"
    )
    assert kube.kubectl("auth", "can-i", "create", "deployments", "-n", namespace).stdout.strip() == ("yes")
    # RBAC is enforced for everybody else: a fresh service account may do nothing.
    proc = kube.kubectl(
        "auth",
        "can-i",
        "list",
        "pods",
        "-n",
        namespace,
        f"--as=system:serviceaccount:{namespace}:default",
        check=False,
    )
    assert proc.stdout.strip() == "no"


def test_service_account_tokens_are_signed_by_the_api_server(kube: KubeEnv, namespace: str) -> None:
    token = kube.kubectl("create", "token", "default", "-n", namespace).stdout.strip()
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == f"system:serviceaccount:{namespace}:default"
    assert claims["iss"] == "https://kubernetes.default.svc.cluster.local"


def test_the_kwok_node_is_ready(kube: KubeEnv) -> None:
    node = kube.core_v1.read_node(kube.node)
    assert node.metadata.annotations["kwok.x-k8s.io/node"] == "fake"
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    assert not [t for t in node.spec.taints or [] if t.effect in ("NoSchedule", "NoExecute")]


def test_deployment_pods_become_ready_on_the_kwok_node(kube: KubeEnv, namespace: str) -> None:
    created = kube.apps_v1.create_namespaced_deployment(namespace, _deployment("web", 2))

    # kube-controller-manager's deployment controller makes a ReplicaSet ...
    replicasets = wait_until(
        lambda: _replicasets_of(kube, namespace, created.metadata.uid),
        timeout=30,
        message="the deployment's replicaset",
    )
    assert len(replicasets) == 1
    # ... kube-scheduler binds its pods to the kwok node, and kwok reports them Ready.
    pods = _wait_for_ready_pods(kube, namespace, "web", 2)
    assert {pod.spec.node_name for pod in pods} == {kube.node}
    assert all(pod.status.pod_ip for pod in pods)
    owners = {ref.uid for pod in pods for ref in pod.metadata.owner_references}
    assert owners == {replicasets[0].metadata.uid}
    wait_until(
        lambda: any(
            c.type == "Available" and c.status == "True"
            for c in kube.apps_v1.read_namespaced_deployment_status("web", namespace).status.conditions or []
        ),
        timeout=30,
        message="deployment web Available",
    )


def test_scaling_a_deployment_makes_the_ready_count_follow(kube: KubeEnv, namespace: str) -> None:
    kube.apps_v1.create_namespaced_deployment(namespace, _deployment("scaled", 1))
    _wait_for_ready_pods(kube, namespace, "scaled", 1)

    kube.apps_v1.patch_namespaced_deployment_scale("scaled", namespace, {"spec": {"replicas": 4}})
    _wait_for_ready_pods(kube, namespace, "scaled", 4)

    kube.kubectl("scale", "deployment/scaled", "--replicas=2", "-n", namespace)
    _wait_for_ready_pods(kube, namespace, "scaled", 2)


def test_deleting_a_deployment_garbage_collects_its_replicaset_and_pods(
    kube: KubeEnv, namespace: str
) -> None:
    created = kube.apps_v1.create_namespaced_deployment(namespace, _deployment("doomed", 2))
    _wait_for_ready_pods(kube, namespace, "doomed", 2)
    assert _replicasets_of(kube, namespace, created.metadata.uid)

    kube.apps_v1.delete_namespaced_deployment("doomed", namespace, propagation_policy="Background")

    wait_until(
        lambda: not _replicasets_of(kube, namespace, created.metadata.uid),
        timeout=60,
        message="the garbage collector to delete the replicaset",
    )
    wait_until(
        lambda: not kube.core_v1.list_namespaced_pod(namespace, label_selector=f"{APP_LABEL}=doomed").items,
        timeout=60,
        message="the pods to be deleted",
    )


def test_a_crd_cel_validation_rule_rejects_a_violating_object_with_its_message(
    kube: KubeEnv, namespace: str
) -> None:
    group = "envtest.feedwatch.example.com"
    plural = f"ranges{uuid.uuid4().hex[:8]}"
    message = "spec.min must not be greater than spec.max"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural[:-1], "kind": "Range" + plural[6:]},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["min", "max"],
                                    "properties": {
                                        "min": {"type": "integer"},
                                        "max": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {"rule": "self.min <= self.max", "message": message}
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(crd))
    try:
        kube.kubectl("wait", "--for=condition=Established", f"crd/{plural}.{group}", "--timeout=30s")
        kind = crd["spec"]["names"]["kind"]  # type: ignore[index]

        def create(name: str, lo: int, hi: int) -> Any:
            body = {
                "apiVersion": f"{group}/v1",
                "kind": kind,
                "metadata": {"name": name},
                "spec": {"min": lo, "max": hi},
            }
            return kube.custom_objects.create_namespaced_custom_object(group, "v1", namespace, plural, body)

        # The discovery/OpenAPI of a new CRD may lag "Established" briefly.
        wait_until(lambda: create("valid", 1, 5), timeout=30, message="a valid object accepted")

        with pytest.raises(ApiException) as rejected:
            create("invalid", 5, 1)
        assert rejected.value.status == 422
        assert message in str(rejected.value.body)
        with pytest.raises(ApiException):
            kube.custom_objects.get_namespaced_custom_object(group, "v1", namespace, plural, "invalid")
    finally:
        kube.kubectl("delete", "crd", f"{plural}.{group}", "--wait=false", check=False)


@pytest.mark.chart
def test_helm_version_and_template_work_from_the_cache(kube: KubeEnv) -> None:
    assert (kube.bin_dir / "helm").is_file()
    version = kube.helm("version", "--template", "{{ .Version }}").stdout.strip()
    assert version == kube.versions["helm"]

    rendered = kube.helm(
        "template", "demo", str(TRIVIAL_CHART), "--set", "greeting=hi", "--kube-version", "1.37.0"
    ).stdout
    assert "kind: Deployment" in rendered
    assert "name: demo-config" in rendered
    assert 'greeting: "hi"' in rendered


@pytest.mark.chart
def test_helm_install_of_a_trivial_chart_works_against_the_api_server(kube: KubeEnv, namespace: str) -> None:
    kube.helm(
        "install",
        "trivial",
        str(TRIVIAL_CHART),
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "90s",
        timeout=120,
    )
    releases = json.loads(kube.helm("list", "--namespace", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("trivial", "deployed")]

    config = kube.core_v1.read_namespaced_config_map("trivial-config", namespace)
    # helm asked the real API server for its version (.Capabilities.KubeVersion)
    assert config.data["kubeVersion"] == kube.versions["kubernetes"]
    assert _ready_replicas(kube, namespace, "trivial") == 2

    kube.helm("uninstall", "trivial", "--namespace", namespace, "--wait", timeout=120)
    wait_until(
        lambda: not kube.apps_v1.list_namespaced_deployment(namespace).items,
        timeout=60,
        message="helm uninstall to remove the deployment",
    )
