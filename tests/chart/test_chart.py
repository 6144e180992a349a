"""The Helm chart against real helm and a real kube-apiserver (hack/k8s-env).

Lint, render and server-side dry runs; the install / upgrade / uninstall
lifecycle (the CRD is upgraded by ``helm upgrade`` and kept by ``helm
uninstall``, as are the users' FeedWatchers); the values schema; and the
chart's RBAC, by running the real operator with a token of the chart's
ServiceAccount.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from feedwatch import Feed
from tests.conftest import MARIADB_URL, database_url
from tests.support.kube_operator import apply_crd
from tests.support.kubernetes import KubeEnv
from tests.support.ports import free_port
from tests.support.processes import stop
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.chart, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "feedwatch"
CRD_SOURCE = ROOT / "crds" / "feedwatcher.yaml"
CRD_COPY = CHART / "files" / "crds" / "feedwatcher.yaml"
CRD_NAME = "feedwatchers.feedwatch.dev"
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
#: Every optional part of the chart switched on.
ALL_FEATURES = [
    "--set", "metrics.enabled=true",
    "--set", "metrics.serviceMonitor.enabled=true",
    "--set", "podDisruptionBudget.enabled=true",
    "--set", "crds.install=true",
    "--set", "rbac.aggregateClusterRoles=true",
]  # fmt: skip

#: The least a ServiceMonitor CRD needs for a server-side dry run of ours (the
#: Prometheus Operator is not installed here).
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {"kind": "ServiceMonitor", "plural": "servicemonitors", "singular": "servicemonitor"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


def release_name() -> str:
    return f"fw{uuid.uuid4().hex[:6]}"


def render(
    kube: KubeEnv, *args: str, chart: Path = CHART, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``helm template`` for the test cluster's Kubernetes version."""
    return kube.helm(
        "template", "t", str(chart), "--kube-version", kube.versions["kubernetes"], *args, check=check
    )


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def dry_run(kube: KubeEnv, docs: list[dict[str, Any]]) -> str:
    """``kubectl apply --dry-run=server``: the API server validates and admits, stores nothing.

    Every namespaced object names its namespace (the chart sets it), so no ``-n``.
    """
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            name = f"{doc['kind']} {doc['metadata']['name']}"
            assert doc["metadata"].get("namespace"), f"{name} has no namespace"
    text = "\n---\n".join(yaml.safe_dump(doc) for doc in docs)
    return kube.kubectl("apply", "--dry-run=server", "-f", "-", input=text).stdout


def kubectl_json(kube: KubeEnv, *args: str) -> Any:
    return json.loads(kube.kubectl(*args, "-o", "json").stdout)


def exists(kube: KubeEnv, *args: str) -> bool:
    return kube.kubectl("get", *args, check=False).returncode == 0


def feedwatcher(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "feedwatch.dev/v1alpha1",
        "kind": "FeedWatcher",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "database": {"urlSecretRef": {"name": "feedwatch-db"}, "migrate": True},
            "handler": {"url": "http://127.0.0.1:9/items"},
            "replicas": 1,
            **spec,
        },
    }


def hook_command(kube: KubeEnv, *values: str) -> tuple[list[str], dict[str, str]]:
    """The `helm test` pod's command (with this Python) and environment, as rendered."""
    (pod,) = by_kind(documents(render(kube, *values).stdout))["Pod"]
    (container,) = pod["spec"]["containers"]
    command = [sys.executable if part == "python3" else part for part in container["command"]]
    return command, {e["name"]: e["value"] for e in container["env"]}


def run_hook(
    command: list[str], env: dict[str, str], url: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The hook's command run here, its ``HEALTH_URL`` pointed at ``url``."""
    return subprocess.run(
        command,
        env={**os.environ, **env, "HEALTH_URL": url},
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ----------------------------------------------------------------- rendering
def test_the_chart_crd_is_the_repository_crd_byte_for_byte() -> None:
    assert CRD_COPY.read_bytes() == CRD_SOURCE.read_bytes(), (
        f"{CRD_COPY.relative_to(ROOT)} differs from {CRD_SOURCE.relative_to(ROOT)}: run `make chart-crd`"
    )


def test_helm_lint_strict_passes_with_defaults_and_with_every_feature(kube: KubeEnv) -> None:
    for extra in ([], [*ALL_FEATURES, "--set", "watchNamespaces={a,b}"]):
        result = kube.helm("lint", "--strict", str(CHART), *extra, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_the_default_render_is_accepted_by_the_api_server(kube: KubeEnv, namespace: str) -> None:
    docs = documents(render(kube, "--namespace", namespace).stdout)
    kinds = by_kind(docs)
    assert sorted(kinds) == [
        "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment", "Pod",
        "Service", "ServiceAccount",
    ]  # fmt: skip
    # No Role: with watchNamespaces empty the operator's rights are cluster-wide.
    names = sorted(doc["metadata"]["name"] for doc in kinds["ClusterRole"])
    assert names == [
        "t-feedwatch-edit",
        "t-feedwatch-operator",
        "t-feedwatch-operator-cluster",
        "t-feedwatch-view",
    ]
    out = dry_run(kube, docs)
    assert out.count("(server dry run)") == len(docs), out

    (crd,) = kinds["CustomResourceDefinition"]
    source = yaml.safe_load(CRD_SOURCE.read_text())
    assert crd["spec"] == source["spec"], "the rendered CRD's spec is the repository's"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (deployment,) = kinds["Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "feedwatch:0.1.0", "the tag defaults to appVersion"
    assert container["args"] == ["operator"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FEEDWATCH_OPERATOR_WATCHER_IMAGE"] == "feedwatch:0.1.0"
    assert "FEEDWATCH_OPERATOR_NAMESPACES" not in env
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-health"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    # The helm test hook: a Service and a Pod that exist only while `helm test` runs.
    for hook in (*kinds["Service"], *kinds["Pod"]):
        assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"


def test_every_optional_feature_renders_and_is_accepted_by_the_api_server(
    kube: KubeEnv, namespace: str
) -> None:
    other = f"{namespace[:50]}-other"
    kube.kubectl("create", "namespace", other)
    try:
        args = [*ALL_FEATURES, "--namespace", namespace, "--set", f"watchNamespaces={{{namespace},{other}}}"]
        # Without monitoring.coreos.com/v1 in the cluster there is no ServiceMonitor ...
        assert "ServiceMonitor" not in by_kind(documents(render(kube, *args).stdout))
        # ... with it, there is.
        docs = documents(render(kube, *args, "--api-versions", "monitoring.coreos.com/v1").stdout)
        kinds = by_kind(docs)
        for kind in ("ServiceMonitor", "PodDisruptionBudget", "Role", "RoleBinding"):
            assert kind in kinds, kind
        assert sorted(r["metadata"]["namespace"] for r in kinds["Role"]) == sorted([namespace, other])
        assert "t-feedwatch-operator" not in {r["metadata"]["name"] for r in kinds["ClusterRole"]}
        (deployment,) = kinds["Deployment"]
        env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["FEEDWATCH_OPERATOR_NAMESPACES"] == f"{namespace},{other}"
        metrics = next(s for s in kinds["Service"] if s["metadata"]["name"] == "t-feedwatch-metrics")
        assert metrics["spec"]["ports"][0]["targetPort"] == "http-health"
        # The server-side dry run of a ServiceMonitor needs its CRD: install a minimal one.
        kube.kubectl("apply", "-f", "-", input=json.dumps(SERVICE_MONITOR_CRD))
        try:
            kube.kubectl(
                "wait",
                "--for=condition=Established",
                "crd/servicemonitors.monitoring.coreos.com",
                "--timeout=60s",
            )
            out = dry_run(kube, docs)
        finally:
            kube.kubectl("delete", "crd", "servicemonitors.monitoring.coreos.com", "--wait=false")
        assert out.count("(server dry run)") == len(docs), out
        assert "servicemonitor.monitoring.coreos.com/t-feedwatch created (server dry run)" in out
    finally:
        kube.kubectl("delete", "namespace", other, "--wait=false")


def test_a_pod_disruption_budget_takes_max_unavailable_over_min_available(kube: KubeEnv) -> None:
    base = ["--set", "podDisruptionBudget.enabled=true"]
    (pdb,) = by_kind(documents(render(kube, *base).stdout))["PodDisruptionBudget"]
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    (pdb,) = by_kind(documents(render(kube, *base, "--set", "podDisruptionBudget.maxUnavailable=1").stdout))[
        "PodDisruptionBudget"
    ]
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]


def test_the_values_schema_rejects_a_wrong_type_and_an_unknown_key_and_allows_global(kube: KubeEnv) -> None:
    wrong_type = render(kube, "--set", "operator.healthPort=eighty", check=False)
    assert wrong_type.returncode != 0
    assert "values don't meet the specifications of the schema(s)" in wrong_type.stderr
    assert "healthPort" in wrong_type.stderr and "integer" in wrong_type.stderr, wrong_type.stderr

    unknown = render(kube, "--set", "crds.instal=false", check=False)
    assert unknown.returncode != 0
    assert "additional properties 'instal' not allowed" in unknown.stderr, unknown.stderr

    # FeedWatchers are not values of this chart (docs/helm.md: a CR in its CRD's release).
    listed = render(kube, "--set-json", 'feedWatchers=[{"name": "x"}]', check=False)
    assert listed.returncode != 0 and "additional properties 'feedWatchers' not allowed" in listed.stderr

    # A parent chart's global values are welcome.
    assert render(kube, "--set", "global.imageRegistry=example.org").returncode == 0


def test_the_helm_test_hook_command_passes_against_a_live_health_endpoint_and_fails_without_one(
    kube: KubeEnv, tmp_path: Path
) -> None:
    """The hook pod's script, run here with its URL pointed at a local /healthz."""
    command, env = hook_command(kube, "--set", "helmTest.timeoutSeconds=3")
    assert env["HEALTH_URL"] == "http://t-feedwatch-test.default.svc:8080/healthz"
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-c",
            "import http.server as h\n"
            "class H(h.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        self.send_response(200 if self.path == '/healthz' else 404); self.end_headers()\n"
            f"h.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n",
        ]
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        ok = run_hook(command, env, url)
        assert ok.returncode == 0, ok.stderr
        assert f"{url}: 200" in ok.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
    down = run_hook(command, env, url)
    assert down.returncode != 0 and "did not answer" in down.stderr


# ----------------------------------------------------------------- lifecycle
def test_install_upgrade_and_uninstall_keep_the_crd_and_the_users_feedwatchers(
    kube: KubeEnv, namespace: str, tmp_path: Path
) -> None:
    # A CRD left by another test would belong to no release here: start without one.
    if exists(kube, "crd", CRD_NAME):
        kube.kubectl("delete", "crd", CRD_NAME, "--wait=true", "--timeout=60s")
    release = release_name()
    fullname = f"{release}-feedwatch"
    installed = kube.helm(
        "install", release, str(CHART), "-n", namespace, "--wait", "--timeout", "120s", timeout=180
    ).stdout
    # NOTES.txt: how to declare a first FeedWatcher, and what uninstalling leaves behind.
    notes = installed[installed.index("NOTES:") :]
    assert "kubectl apply -f -" in notes and "kind: FeedWatcher" in notes, notes
    assert "running, unmanaged" in " ".join(notes.split()), notes

    deployment = kubectl_json(kube, "get", "deployment", fullname, "-n", namespace)
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == fullname
    assert exists(kube, "serviceaccount", fullname, "-n", namespace)
    for role in ("operator", "operator-cluster", "edit", "view"):
        assert exists(kube, "clusterrole", f"{fullname}-{role}"), role
    for binding in ("operator", "operator-cluster"):
        assert exists(kube, "clusterrolebinding", f"{fullname}-{binding}"), binding
    crd = kubectl_json(kube, "get", "crd", CRD_NAME)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
    # The aggregated roles reach namespace users: `edit` may now create FeedWatchers.
    wait_until(
        lambda: any(
            "feedwatchers" in rule.get("resources", [])
            for rule in kubectl_json(kube, "get", "clusterrole", "edit").get("rules", [])
        ),
        timeout=30,
        message="the built-in edit role to aggregate the FeedWatcher rules",
    )

    # A user's FeedWatcher, declared with kubectl apply.
    kube.kubectl("apply", "-f", "-", input=json.dumps(feedwatcher("users-own", namespace)))

    # helm upgrade with a changed CRD (an extra description) updates the CRD.
    changed = tmp_path / "feedwatch"
    shutil.copytree(CHART, changed)
    marker = f"Changed by the chart upgrade test {uuid.uuid4().hex[:8]}."
    crd_doc = yaml.safe_load((changed / "files" / "crds" / "feedwatcher.yaml").read_text())
    crd_doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = marker
    (changed / "files" / "crds" / "feedwatcher.yaml").write_text(yaml.safe_dump(crd_doc))
    kube.helm("upgrade", release, str(changed), "-n", namespace, "--wait", "--timeout", "120s", timeout=180)
    upgraded = kubectl_json(kube, "get", "crd", CRD_NAME)
    assert upgraded["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] == marker

    # helm uninstall: the operator and its RBAC go; the CRD and the FeedWatcher stay.
    kube.helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "120s", timeout=180)
    wait_until(
        lambda: not exists(kube, "deployment", fullname, "-n", namespace),
        timeout=60,
        message="the operator Deployment to go",
    )
    assert not exists(kube, "clusterrole", f"{fullname}-operator")
    assert not exists(kube, "clusterrole", f"{fullname}-edit")
    assert exists(kube, "crd", CRD_NAME), "the CRD is kept"
    assert exists(kube, "feedwatcher", "users-own", "-n", namespace), "the user's FeedWatcher is kept"
    # Restore the repository's CRD for the tests that follow.
    apply_crd(kube)


# ----------------------------------------------------------------------- RBAC
def _operator_help_works() -> bool:
    probe = subprocess.run(
        [sys.executable, "-m", "feedwatch", "operator", "--help"], capture_output=True, text=True, check=False
    )
    return probe.returncode == 0


def service_account_kubeconfig(kube: KubeEnv, token: str, path: Path) -> Path:
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def operator_release(kube: KubeEnv, namespace: str) -> Iterator[tuple[str, str, str]]:
    """The chart installed in ``namespace``, serving ``namespace`` only; (release, fullname, other ns)."""
    apply_crd(kube)
    other = f"{namespace[:50]}-other"
    kube.kubectl("create", "namespace", other)
    release = release_name()
    kube.helm(
        "install", release, str(CHART), "-n", namespace, "--set", "crds.install=false",
        "--set", f"watchNamespaces={{{namespace}}}", "--wait", "--timeout", "120s", timeout=180,
    )  # fmt: skip
    try:
        yield release, f"{release}-feedwatch", other
    finally:
        kube.helm(
            "uninstall", release, "-n", namespace, "--wait", "--timeout", "120s", check=False, timeout=180
        )
        kube.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_the_service_account_is_refused_what_the_operator_does_not_need(
    kube: KubeEnv, namespace: str, operator_release: tuple[str, str, str]
) -> None:
    _, fullname, other = operator_release
    who = f"system:serviceaccount:{namespace}:{fullname}"

    def can(verb: str, resource: str, ns: str | None = None) -> bool:
        args = ["auth", "can-i", verb, resource, f"--as={who}"]
        args += ["-n", ns] if ns else []
        answer = kube.kubectl(*args, check=False).stdout.strip()
        assert answer in ("yes", "no"), answer
        return answer == "yes"

    assert can("get", "secrets", namespace)
    assert not can("get", "secrets", other), "no Secrets outside the watched namespaces"
    assert not can("list", "secrets", namespace) and not can("watch", "secrets", namespace)
    for verb in ("get", "list", "watch", "patch"):
        assert can(verb, "feedwatchers.feedwatch.dev", namespace), verb
    assert not can("get", "feedwatchers.feedwatch.dev", other)
    assert not can("delete", "feedwatchers.feedwatch.dev", namespace)
    assert not can("update", "feedwatchers.feedwatch.dev", namespace), "the operator never writes spec"
    for verb in ("create", "patch", "update"):
        assert can(verb, "deployments.apps", namespace), verb
    assert not can("delete", "deployments.apps", namespace), "deletion is the garbage collector's"
    assert not can("create", "deployments.apps", other)
    assert can("create", "events", namespace)
    assert can("list", "namespaces") and not can("create", "namespaces")
    assert can("get", "customresourcedefinitions.apiextensions.k8s.io")
    assert not can("update", "customresourcedefinitions.apiextensions.k8s.io")
    assert not can("create", "clusterroles.rbac.authorization.k8s.io")


def test_the_operator_reconciles_with_only_the_charts_service_account(
    kube: KubeEnv, namespace: str, operator_release: tuple[str, str, str], tmp_path: Path
) -> None:
    assert _operator_help_works(), "`feedwatch operator --help` fails: the operator command is not there"
    _, fullname, other = operator_release
    token = kube.kubectl("create", "token", fullname, "-n", namespace, "--duration", "1h").stdout.strip()
    kubeconfig = service_account_kubeconfig(kube, token, tmp_path / "operator.kubeconfig")
    as_operator = {**kube.env, "KUBECONFIG": str(kubeconfig)}
    # The token itself is refused another namespace's Secrets (not only `can-i`).
    refused = subprocess.run(
        [str(kube.bin_dir / "kubectl"), "get", "secrets", "-n", other],
        env=as_operator, capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused.stderr

    kube.kubectl(
        "create", "secret", "generic", "feedwatch-db", "-n", namespace, f"--from-literal=url={MARIADB_URL}"
    )
    log = tmp_path / "operator.log"
    health_port = free_port()
    env = {
        **as_operator,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")]),
        "FEEDWATCH_OPERATOR_HEALTH_PORT": str(health_port),
        "FEEDWATCH_OPERATOR_WATCHER_IMAGE": "localhost/feedwatch:test",
    }
    with log.open("ab") as out:
        operator = subprocess.Popen(
            [sys.executable, "-m", "feedwatch", "operator", "--namespace", namespace],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        kube.kubectl("apply", "-f", "-", input=json.dumps(feedwatcher("rbac-check", namespace)))
        deployment = wait_until(
            lambda: kubectl_json(kube, "get", "deployment", "rbac-check", "-n", namespace),
            timeout=120,
            message=lambda: f"the watcher Deployment, operator log:\n{log.read_text()[-4000:]}",
        )
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "localhost/feedwatch:test"
        owner = deployment["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("FeedWatcher", "rbac-check")
        # Its status too is written with the chart's rights.
        wait_until(
            lambda: (
                kubectl_json(kube, "get", "feedwatcher", "rbac-check", "-n", namespace)
                .get("status", {})
                .get("observedGeneration")
            ),
            timeout=60,
            message=lambda: f"status.observedGeneration, operator log:\n{log.read_text()[-4000:]}",
        )

        # Autoscaling with the chart's rights: two due partitions, one per replica -> 2 replicas.
        feed = Feed.create(database_url("mariadb", "sqlite://"), f"rbac{uuid.uuid4().hex[:8]}")  # migrated
        try:
            for part in ("p0", "p1"):
                feed.enqueue(part, {"i0": {"n": 1}})
            autoscaling = {
                "enabled": True, "minReplicaCount": 0, "maxReplicaCount": 3,
                "targetBacklogPerReplica": 1, "pollingInterval": 1,
            }  # fmt: skip
            scaled = feedwatcher("rbac-scale", namespace, feed=feed.name, autoscaling=autoscaling)
            kube.kubectl("apply", "-f", "-", input=json.dumps(scaled))
            wait_until(
                lambda: (
                    kubectl_json(kube, "get", "deployment", "rbac-scale", "-n", namespace)["spec"]["replicas"]
                    == 2
                ),
                timeout=120,
                message=lambda: f"the autoscaler's 2 replicas, operator log:\n{log.read_text()[-4000:]}",
            )
        finally:
            feed.store.close()

        # The `helm test` hook's script passes against this operator's /healthz.
        command, hook_env = hook_command(kube)
        hook = run_hook(command, hook_env, f"http://127.0.0.1:{health_port}/healthz", timeout=90)
        assert hook.returncode == 0, hook.stdout + hook.stderr
        assert operator.poll() is None, log.read_text()[-4000:]
    finally:
        stop(operator)
    text = log.read_text()
    assert "403" not in text and "forbidden" not in text.lower(), text[-4000:]


# ------------------------------------------------------------------- values
#: Keys whose content is Kubernetes' own (documented by their parent's comment).
FREE_FORM = {
    "global", "commonLabels", "resources", "podAnnotations", "podLabels", "podSecurityContext",
    "containerSecurityContext", "nodeSelector", "affinity", "annotations", "labels",
}  # fmt: skip


def _value_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        paths.append(prefix + key)
        if isinstance(value, dict) and key not in FREE_FORM:
            paths += _value_paths(value, f"{prefix}{key}.")
    return paths


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, sub in schema.get("properties", {}).items():
        paths.append(prefix + key)
        if sub.get("type") == "object" and "properties" in sub:
            assert sub.get("additionalProperties") is False, f"{prefix}{key} accepts unknown keys"
            paths += _schema_paths(sub, f"{prefix}{key}.")
    return paths


def test_every_value_is_commented_and_in_the_schema_and_the_schema_has_nothing_else() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert sorted(_value_paths(values)) == sorted(_schema_paths(schema))
    # Each value (a leaf, or a free-form map) has its own comment right above it.
    leaves = {
        path
        for path in _value_paths(values)
        if not isinstance(_lookup(values, path), dict) or path.rsplit(".", 1)[-1] in FREE_FORM
    }
    stack: list[tuple[int, str]] = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, match.group(2))]
        path = ".".join(k for _, k in stack)
        if path in leaves:
            leaves.discard(path)
            assert lines[number - 1].lstrip().startswith("#"), (
                f"values.yaml line {number + 1}: {path} has no comment"
            )
    assert not leaves, f"values not found line by line: {leaves}"


def _lookup(values: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        values = values[key]
    return values
