"""The operator against a real API server: FeedWatchers in, watcher Deployments out.

One operator subprocess serves the whole module (a namespace pattern; each
test gets its own matching namespace), so the module pays one start. The
database Secrets point at the test MariaDB (``hack/databases``). Fixtures
(``crd``, ``shared_operator``, ``operator_namespace``) come from
``tests/support/kube_operator.py`` through ``conftest.py``.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any

import pytest

from feedwatch import Feed, Store
from tests.support.kube_operator import (
    MARIADB_URL,
    TEST_IMAGE,
    OperatorProcess,
    condition,
    create_database_secret,
    create_feedwatcher,
    events,
    feedwatcher,
    patch_spec,
    read_deployment,
    read_feedwatcher,
    replace_secret_data,
    wait_for_condition,
)
from tests.support.kubernetes import KubeEnv
from tests.support.waiting import wait_until

pytestmark = pytest.mark.kubernetes

CLOSED_PORT_URL = "mysql+pymysql://feedwatch:feedwatch@127.0.0.1:9/feedwatch"


def _feed() -> str:
    return f"op{uuid.uuid4().hex[:10]}"


def _deployment(kube: KubeEnv, namespace: str, name: str) -> dict[str, Any]:
    found = wait_until(
        lambda: read_deployment(kube, namespace, name),
        timeout=60,
        message=f"Deployment {namespace}/{name}",
    )
    assert found is not None
    return found


def _wait_deployment_replicas(kube: KubeEnv, namespace: str, name: str, wanted: int, what: str) -> None:
    wait_until(
        lambda: _deployment(kube, namespace, name)["spec"]["replicas"] == wanted, timeout=60, message=what
    )


def _wait_ready_replicas(kube: KubeEnv, namespace: str, name: str, wanted: int, what: str) -> dict[str, Any]:
    """Wait for ``status.readyReplicas``; returns the FeedWatcher that showed it."""
    body: dict[str, Any] = wait_until(
        lambda: (b := read_feedwatcher(kube, namespace, name))["status"].get("readyReplicas") == wanted and b,
        timeout=60,
        message=what,
    )
    return body


def _wait_deployment_deleted(kube: KubeEnv, namespace: str, name: str) -> None:
    wait_until(
        lambda: read_deployment(kube, namespace, name) is None,
        timeout=60,
        message="the garbage collector to delete the Deployment",
    )


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _checksum(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["metadata"]["annotations"]["feedwatch.dev/secrets-checksum"])


@pytest.fixture
def ready_fw(
    shared_operator: OperatorProcess, operator_namespace: str
) -> tuple[KubeEnv, str, str, dict[str, Any]]:
    """A Ready FeedWatcher "fw" on MariaDB; returns (kube, namespace, name, feedwatcher)."""
    kube = shared_operator.kube
    create_database_secret(kube, operator_namespace)
    create_feedwatcher(kube, operator_namespace, feedwatcher("fw", feed=_feed()))
    body = wait_for_condition(
        kube, operator_namespace, "fw", "Ready", reason="DeploymentAvailable", operator=shared_operator
    )
    return kube, operator_namespace, "fw", body


def test_a_feedwatcher_yields_its_deployment_and_becomes_ready(
    shared_operator: OperatorProcess, ready_fw: tuple[KubeEnv, str, str, dict[str, Any]]
) -> None:
    kube, namespace, name, body = ready_fw
    deployment = read_deployment(kube, namespace, name)
    assert deployment is not None
    meta = deployment["metadata"]
    assert meta["labels"] == {
        "app.kubernetes.io/name": "feedwatch-watcher",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": "feedwatch-operator",
        "feedwatch.dev/feedwatcher": name,
    }
    [owner] = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("FeedWatcher", name, body["metadata"]["uid"])
    assert owner["controller"] is True
    assert owner["blockOwnerDeletion"] is True
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == TEST_IMAGE
    assert (container["command"], container["args"]) == (["feedwatch"], ["watch"])
    env = _env(deployment)
    assert env["FEEDWATCH_DATABASE_URL"] == {"secretKeyRef": {"name": "feedwatch-db", "key": "url"}}
    assert env["FEEDWATCH_FEED"] == body["spec"]["feed"]
    assert env["FEEDWATCH_HANDLER"] == "http://handler.invalid:8000/"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] == 20
    assert MARIADB_URL not in json.dumps(deployment)

    status = body["status"]
    assert (status["replicas"], status["readyReplicas"]) == (1, 1)
    assert status["selector"] == "feedwatch.dev/feedwatcher=fw"
    assert condition(body, "Degraded")["reason"] == "AsExpected"
    assert body["metadata"].get("finalizers") in (None, [])
    printed = kube.kubectl("get", "fw", "-n", namespace).stdout.splitlines()
    assert printed[0].split() == ["NAME", "FEED", "REPLICAS", "READY", "BACKLOG", "STATUS", "AGE"]
    row = printed[1].split()
    assert row[:4] == [name, body["spec"]["feed"], "1", "1"]
    assert row[-2] == "DeploymentAvailable"
    assert shared_operator.metric("feedwatch_operator_reconciles_total", outcome="applied") >= 1


def test_a_spec_update_is_followed_by_the_deployment(
    ready_fw: tuple[KubeEnv, str, str, dict[str, Any]],
) -> None:
    kube, namespace, name, _ = ready_fw
    patch_spec(kube, namespace, name, {"watcher": {"concurrency": 3, "gracePeriodSeconds": 5}})
    wait_until(
        lambda: _env(_deployment(kube, namespace, name)).get("FEEDWATCH_CONCURRENCY") == "3",
        timeout=60,
        message="the Deployment to carry FEEDWATCH_CONCURRENCY=3",
    )
    body = wait_for_condition(kube, namespace, name, "Ready")
    assert condition(body, "Ready")["observedGeneration"] == body["metadata"]["generation"]


def test_a_hand_edited_deployment_is_restored_and_a_deleted_one_recreated(
    ready_fw: tuple[KubeEnv, str, str, dict[str, Any]],
) -> None:
    kube, namespace, name, _ = ready_fw
    kube.kubectl("set", "image", f"deployment/{name}", "watcher=evil:1", "-n", namespace)
    kube.kubectl("scale", f"deployment/{name}", "--replicas", "4", "-n", namespace)

    def restored() -> bool:
        deployment = _deployment(kube, namespace, name)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return bool(container["image"] == TEST_IMAGE and deployment["spec"]["replicas"] == 1)

    wait_until(restored, timeout=60, message="the operator to restore image and replicas")

    uid = _deployment(kube, namespace, name)["metadata"]["uid"]
    kube.kubectl("delete", f"deployment/{name}", "-n", namespace, "--wait=false")
    wait_until(
        lambda: (
            (read_deployment(kube, namespace, name) or {}).get("metadata", {}).get("uid") not in (None, uid)
        ),
        timeout=60,
        message="the Deployment to be recreated",
    )
    wait_for_condition(kube, namespace, name, "Ready", reason="DeploymentAvailable")


def test_a_changed_secret_rolls_the_pods_through_the_checksum(
    ready_fw: tuple[KubeEnv, str, str, dict[str, Any]],
) -> None:
    kube, namespace, name, _ = ready_fw
    before = _checksum(_deployment(kube, namespace, name))
    replace_secret_data(kube, namespace, "feedwatch-db", {"url": MARIADB_URL, "note": "rotated"})
    wait_until(
        lambda: _checksum(_deployment(kube, namespace, name)) != before,
        timeout=30,
        message="the secrets checksum to change",
    )


def test_kubectl_scale_on_the_feedwatcher_sets_the_replicas(
    ready_fw: tuple[KubeEnv, str, str, dict[str, Any]],
) -> None:
    kube, namespace, name, _ = ready_fw
    kube.kubectl("scale", f"fw/{name}", "--replicas", "3", "-n", namespace)
    _wait_deployment_replicas(kube, namespace, name, 3, "3 replicas")
    body = _wait_ready_replicas(kube, namespace, name, 3, "3 ready replicas in the status")
    assert body["status"]["replicas"] == 3
    assert condition(body, "Ready")["reason"] == "DeploymentAvailable"


def test_a_deleted_feedwatcher_takes_its_deployment_with_it(
    ready_fw: tuple[KubeEnv, str, str, dict[str, Any]],
) -> None:
    kube, namespace, name, _ = ready_fw
    kube.kubectl("delete", f"fw/{name}", "-n", namespace, "--timeout=30s")
    _wait_deployment_deleted(kube, namespace, name)


def test_paused_leaves_hand_edits_alone_and_says_so(
    ready_fw: tuple[KubeEnv, str, str, dict[str, Any]],
) -> None:
    kube, namespace, name, _ = ready_fw
    patch_spec(kube, namespace, name, {"paused": True})
    wait_for_condition(kube, namespace, name, "Progressing", status="False", reason="Paused")
    kube.kubectl("scale", f"deployment/{name}", "--replicas", "2", "-n", namespace)
    body = _wait_ready_replicas(kube, namespace, name, 2, "the status to follow the hand-scaled Deployment")
    assert _deployment(kube, namespace, name)["spec"]["replicas"] == 2  # left alone
    assert condition(body, "Progressing")["reason"] == "Paused"

    patch_spec(kube, namespace, name, {"paused": False})
    _wait_deployment_replicas(kube, namespace, name, 1, "the operator to take over again once unpaused")


def test_a_missing_secret_is_degraded_until_it_is_created(
    shared_operator: OperatorProcess, operator_namespace: str
) -> None:
    kube, namespace = shared_operator.kube, operator_namespace
    create_feedwatcher(kube, namespace, feedwatcher("fw", secret="later", feed=_feed()))
    body = wait_for_condition(kube, namespace, "fw", "Degraded", reason="SecretNotFound")
    assert "later" in condition(body, "Degraded")["message"]
    ready = condition(body, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    assert read_deployment(kube, namespace, "fw") is None
    wait_until(
        lambda: [e for e in events(kube, namespace, "fw") if e["reason"] == "SecretNotFound"],
        timeout=30,
        message="a Warning Event SecretNotFound",
    )

    create_database_secret(kube, namespace, name="later")
    wait_for_condition(kube, namespace, "fw", "Ready", reason="DeploymentAvailable", operator=shared_operator)
    warnings = [e for e in events(kube, namespace, "fw") if e["reason"] == "SecretNotFound"]
    assert len(warnings) == 1  # one per distinct problem, not one per retry
    assert warnings[0]["type"] == "Warning"
    assert [e for e in events(kube, namespace, "fw") if e["reason"] == "Recovered"]


def test_an_unreachable_database_is_degraded_without_holding_the_deployment_back(
    shared_operator: OperatorProcess, operator_namespace: str
) -> None:
    kube, namespace = shared_operator.kube, operator_namespace
    create_database_secret(kube, namespace, url=CLOSED_PORT_URL)
    create_feedwatcher(kube, namespace, feedwatcher("fw", feed=_feed()))
    body = wait_for_condition(kube, namespace, "fw", "Degraded", reason="DatabaseUnreachable")
    assert "feedwatch:feedwatch" not in condition(body, "Degraded")["message"]  # no credentials
    _deployment(kube, namespace, "fw")  # created all the same: the pods may reach it

    replace_secret_data(kube, namespace, "feedwatch-db", {"url": MARIADB_URL})
    body = wait_for_condition(kube, namespace, "fw", "Degraded", status="False", reason="AsExpected")
    wait_for_condition(kube, namespace, "fw", "Ready", reason="DeploymentAvailable")


def test_a_sqlite_url_is_refused_and_gets_no_deployment(
    shared_operator: OperatorProcess, operator_namespace: str
) -> None:
    kube, namespace = shared_operator.kube, operator_namespace
    create_database_secret(kube, namespace, url="sqlite:////tmp/feed.db")
    create_feedwatcher(kube, namespace, feedwatcher("fw", feed=_feed()))
    body = wait_for_condition(kube, namespace, "fw", "Degraded", reason="UnsupportedDatabase")
    message = condition(body, "Degraded")["message"]
    assert "feedwatch-db" in message
    assert "/tmp/feed.db" not in message  # names the Secret, never the value
    assert read_deployment(kube, namespace, "fw") is None


def test_feed_settings_are_applied_to_the_feed_row(
    shared_operator: OperatorProcess, operator_namespace: str
) -> None:
    kube, namespace = shared_operator.kube, operator_namespace
    feed = _feed()
    create_database_secret(kube, namespace)
    create_feedwatcher(
        kube,
        namespace,
        feedwatcher("fw", feed=feed, feedSettings={"maxRetries": 7, "failurePolicy": "skip"}),
    )
    wait_for_condition(kube, namespace, "fw", "Degraded", status="False", reason="AsExpected")
    store = Store.open(MARIADB_URL)
    try:
        settings = Feed(store, feed).settings
        assert (settings.max_retries, settings.failure_policy, settings.auto_close) == (7, "skip", True)
        patch_spec(kube, namespace, "fw", {"feedSettings": {"maxRetries": 2}})
        wait_until(
            lambda: Feed(store, feed).settings.max_retries == 2,
            timeout=60,
            message="maxRetries 2 in the feed row",
        )
        assert Feed(store, feed).settings.failure_policy == "skip"  # fields not given keep their values
    finally:
        store.close()


def test_a_deployment_in_the_way_is_never_taken_over(
    shared_operator: OperatorProcess, operator_namespace: str
) -> None:
    kube, namespace = shared_operator.kube, operator_namespace
    kube.kubectl("create", "deployment", "fw", "--image", "registry.invalid/other:1", "-n", namespace)
    create_database_secret(kube, namespace)
    create_feedwatcher(kube, namespace, feedwatcher("fw", feed=_feed()))
    wait_for_condition(kube, namespace, "fw", "Degraded", reason="DeploymentConflict")
    deployment = _deployment(kube, namespace, "fw")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.invalid/other:1"
    assert not deployment["metadata"].get("ownerReferences")


def test_a_second_feedwatcher_for_the_same_feed_is_a_conflict(
    shared_operator: OperatorProcess, operator_namespace: str
) -> None:
    kube, namespace = shared_operator.kube, operator_namespace
    feed = _feed()
    create_database_secret(kube, namespace)
    create_feedwatcher(kube, namespace, feedwatcher("first", feed=feed))
    wait_for_condition(kube, namespace, "first", "Ready", reason="DeploymentAvailable")
    create_feedwatcher(kube, namespace, feedwatcher("second", feed=feed))
    body = wait_for_condition(kube, namespace, "second", "Degraded", reason="FeedConflict")
    assert "first" in condition(body, "Degraded")["message"]
    assert read_deployment(kube, namespace, "second") is None


def test_with_the_operator_stopped_a_feedwatcher_can_still_be_deleted(
    crd: KubeEnv, namespace: str, tmp_path: Any
) -> None:
    kube = crd
    create_database_secret(kube, namespace)
    with OperatorProcess(kube, namespaces=[namespace], log_path=tmp_path / "operator.log") as operator:
        create_feedwatcher(kube, namespace, feedwatcher("fw", feed=_feed()))
        wait_for_condition(kube, namespace, "fw", "Ready", operator=operator)
    assert operator.returncode == 0, operator.log_tail()
    assert not read_feedwatcher(kube, namespace, "fw")["metadata"].get("finalizers")
    kube.kubectl("delete", "fw/fw", "-n", namespace, "--timeout=30s")
    _wait_deployment_deleted(kube, namespace, "fw")


def test_a_pod_template_the_api_server_refuses_is_invalid_spec_and_keeps_the_last_good_deployment(
    ready_fw: tuple[KubeEnv, str, str, dict[str, Any]],
) -> None:
    kube, namespace, name, _ = ready_fw
    before = _deployment(kube, namespace, name)
    patch_spec(kube, namespace, name, {"podTemplate": {"spec": {"tolerations": [{"operator": "Sometimes"}]}}})
    body = wait_for_condition(kube, namespace, name, "Degraded", reason="InvalidSpec")
    assert "refused the Deployment" in condition(body, "Degraded")["message"]
    after = _deployment(kube, namespace, name)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]  # left as it was

    patch_spec(kube, namespace, name, {"podTemplate": None})
    wait_for_condition(kube, namespace, name, "Ready", reason="DeploymentAvailable")


def test_a_database_that_never_answers_does_not_hold_up_other_feedwatchers(
    shared_operator: OperatorProcess, operator_namespace: str
) -> None:
    kube, namespace = shared_operator.kube, operator_namespace
    with socket.socket() as blackhole:  # accepts connections (the kernel does), never greets
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)
        port = blackhole.getsockname()[1]
        create_database_secret(
            kube, namespace, name="silent-db", url=f"mysql+pymysql://u:p@127.0.0.1:{port}/feedwatch"
        )
        create_database_secret(kube, namespace)
        create_feedwatcher(kube, namespace, feedwatcher("silent", secret="silent-db", feed=_feed()))
        create_feedwatcher(kube, namespace, feedwatcher("good", feed=_feed()))
        started = time.monotonic()
        wait_for_condition(kube, namespace, "good", "Ready", reason="DeploymentAvailable", timeout=60)
        good_ready = time.monotonic() - started
        silent = wait_for_condition(kube, namespace, "silent", "Degraded", reason="DatabaseUnreachable")
        silent_degraded = time.monotonic() - started
    print(f"good Ready after {good_ready:.1f}s; silent DatabaseUnreachable after {silent_degraded:.1f}s")
    assert "no answer within" in condition(silent, "Degraded")["message"]
    _deployment(kube, namespace, "silent")  # created all the same
