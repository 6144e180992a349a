"""The process node (tests/support/process_node.py) runs kwok's pods as local processes.

Plain Deployments whose container runs a small Python program that writes its
environment and argv to a file and waits for SIGTERM: scaling starts and stops
processes, the env is resolved from every source as a kubelet would, a process
that ignores SIGTERM is killed after the grace period, a missing Secret keeps
the container from starting until it exists, and an absent ``command`` runs
the checkout's ``feedwatch``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kubernetes import KubeEnv
from tests.support.process_node import ProcessNode, process_node
from tests.support.waiting import wait_until

pytestmark = pytest.mark.kubernetes

APP = "feedwatch.test/app"

# The container: record env and argv, then wait for SIGTERM (or ignore it when asked).
PROGRAM = """
import json, os, signal, sys
out, name = os.environ["OUT_DIR"], os.environ["POD_NAME"]
def term(*_):
    with open(os.path.join(out, name + ".terminated"), "w") as f:
        f.write("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("IGNORE_TERM") else term)
tmp = os.path.join(out, name + ".json.tmp")
with open(tmp, "w") as f:
    json.dump({"env": dict(os.environ), "argv": sys.argv[1:], "pid": os.getpid()}, f)
os.rename(tmp, os.path.join(out, name + ".json"))
while True:
    signal.pause()
"""


def deployment(
    name: str,
    out: Path,
    *,
    replicas: int = 1,
    env: list[dict[str, Any]] | None = None,
    env_from: list[dict[str, Any]] | None = None,
    command: list[str] | None = None,
    args: list[str] | None = None,
    grace: int = 5,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": "registry.invalid/feedwatch/app:1",  # never pulled: kwok runs no container
        "env": [
            {"name": "OUT_DIR", "value": str(out)},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            *(env or []),
        ],
    }
    if command is not None:
        container["command"] = command
    if args is not None:
        container["args"] = args
    if env_from:
        container["envFrom"] = env_from
    labels = {APP: name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"terminationGracePeriodSeconds": grace, "containers": [container]},
            },
        },
    }


def written(out: Path, pod: str) -> dict[str, Any]:
    path = out / f"{pod}.json"
    found = wait_until(
        lambda: json.loads(path.read_text()) if path.exists() else None,
        timeout=30,
        message=f"{path} written by the container",
    )
    assert isinstance(found, dict)
    return found


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


@pytest.fixture
def node(kube: KubeEnv, namespace: str, tmp_path: Path) -> Iterator[ProcessNode]:
    with process_node(kube, namespace, tmp_path / "node") as running:
        yield running


def scale(kube: KubeEnv, namespace: str, name: str, replicas: int) -> None:
    kube.apps_v1.patch_namespaced_deployment_scale(name, namespace, {"spec": {"replicas": replicas}})


def test_scaling_a_deployment_starts_and_stops_one_process_per_pod(
    kube: KubeEnv, namespace: str, node: ProcessNode, out: Path
) -> None:
    command = ["python3", "-c", PROGRAM]
    kube.apps_v1.create_namespaced_deployment(namespace, deployment("app", out, command=command))
    (first,) = node.wait_for(1, {APP: "app"})
    assert written(out, first.pod)["pid"] == first.pid

    scale(kube, namespace, "app", 3)
    three = node.wait_for(3, {APP: "app"})
    assert len({p.pod for p in three}) == 3
    assert len({p.pid for p in three}) == 3
    assert len({p.health_port for p in three}) == 3  # the host network is shared: one port each
    for p in three:
        assert written(out, p.pod)["env"]["FEEDWATCH_HEALTH_PORT"] == str(p.health_port)

    scale(kube, namespace, "app", 1)
    (kept,) = node.wait_for(1, {APP: "app"})
    stopped = [p for p in three if p.pod != kept.pod]
    assert len(stopped) == 2
    for p in stopped:
        assert (out / f"{p.pod}.terminated").read_text() == "SIGTERM"
        assert p.exit_codes == [0]
        assert not p.killed
    assert kept.running
    assert not (out / f"{kept.pod}.terminated").exists()

    kube.apps_v1.delete_namespaced_deployment("app", namespace)
    node.wait_for(0, {APP: "app"})
    assert (out / f"{kept.pod}.terminated").read_text() == "SIGTERM"


def test_env_is_resolved_from_every_source_as_a_kubelet_would(
    kube: KubeEnv, namespace: str, node: ProcessNode, out: Path
) -> None:
    kube.core_v1.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "creds"},
            "stringData": {"url": "mysql+pymysql://u:p@db:3306/x", "token": "s3cret"},
        },
    )
    kube.core_v1.create_namespaced_config_map(
        namespace,
        {"metadata": {"name": "settings"}, "data": {"level": "debug", "T_OVERRIDE": "from-map"}},
    )
    env: list[dict[str, Any]] = [
        {"name": "T_VALUE", "value": "plain"},
        {"name": "T_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "url"}}},
        {"name": "T_CONFIG", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "level"}}},
        {"name": "T_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "T_LABEL", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{APP}']"}}},
        {"name": "T_EXPANDED", "value": "$(T_VALUE)-$(T_NAMESPACE)-$(UNDEFINED)"},
        {
            "name": "T_OPTIONAL",
            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "absent", "optional": True}},
        },
        {"name": "T_OVERRIDE", "value": "from-env"},
        {"name": "FEEDWATCH_HEALTH_PORT", "value": "8080"},
    ]
    env_from: list[dict[str, Any]] = [
        {"secretRef": {"name": "creds"}, "prefix": "S_"},
        {"configMapRef": {"name": "settings"}},
    ]
    body = deployment(
        "env",
        out,
        env=env,
        env_from=env_from,
        command=["python3", "-c", PROGRAM],
        args=["$(T_VALUE)", "$$(T_VALUE)", "$(T_CONFIG)"],
    )
    kube.apps_v1.create_namespaced_deployment(namespace, body)
    (p,) = node.wait_for(1, {APP: "env"})
    seen = written(out, p.pod)
    got = seen["env"]
    assert got["POD_NAME"] == p.pod  # fieldRef metadata.name
    assert got["T_VALUE"] == "plain"
    assert got["T_SECRET"] == "mysql+pymysql://u:p@db:3306/x"
    assert got["T_CONFIG"] == "debug"
    assert got["T_NAMESPACE"] == namespace
    assert got["T_LABEL"] == "env"
    assert got["T_EXPANDED"] == f"plain-{namespace}-$(UNDEFINED)"
    assert "T_OPTIONAL" not in got
    assert got["S_url"] == "mysql+pymysql://u:p@db:3306/x"  # envFrom secretRef with prefix
    assert got["S_token"] == "s3cret"
    assert got["level"] == "debug"  # envFrom configMapRef
    assert got["T_OVERRIDE"] == "from-env"  # env wins over envFrom
    assert got["FEEDWATCH_HEALTH_PORT"] == str(p.health_port) != "8080"  # the one departure
    assert seen["argv"] == ["plain", "$(T_VALUE)", "debug"]
    assert "HOME" not in got  # the host's environment does not leak in
    assert p.env["T_SECRET"] == got["T_SECRET"]


def test_a_missing_secret_keeps_the_container_from_starting_until_it_exists(
    kube: KubeEnv, namespace: str, node: ProcessNode, out: Path
) -> None:
    env = [{"name": "T_SECRET", "valueFrom": {"secretKeyRef": {"name": "later", "key": "url"}}}]
    body = deployment("late", out, env=env, command=["python3", "-c", PROGRAM])
    kube.apps_v1.create_namespaced_deployment(namespace, body)
    (waiting,) = wait_until(
        lambda: [p for p in node.all({APP: "late"}) if p.error],
        timeout=60,
        message=lambda: f"the env error recorded\n{node.dump()}",
    )
    assert waiting.error == "env T_SECRET: Secret 'later' not found"
    assert waiting.pids == []
    kube.core_v1.create_namespaced_secret(
        namespace, {"metadata": {"name": "later"}, "stringData": {"url": "now"}}
    )
    (p,) = node.wait_for(1, {APP: "late"})
    assert written(out, p.pod)["env"]["T_SECRET"] == "now"
    assert p.error is None


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(
    kube: KubeEnv, namespace: str, node: ProcessNode, out: Path
) -> None:
    env = [{"name": "IGNORE_TERM", "value": "1"}]
    body = deployment("stubborn", out, env=env, command=["python3", "-c", PROGRAM], grace=1)
    kube.apps_v1.create_namespaced_deployment(namespace, body)
    (p,) = node.wait_for(1, {APP: "stubborn"})
    written(out, p.pod)
    kube.apps_v1.delete_namespaced_deployment("stubborn", namespace)
    node.wait_for(0, {APP: "stubborn"})
    assert p.killed
    assert p.exit_codes == [-9]
    assert not (out / f"{p.pod}.terminated").exists()


def test_an_absent_command_runs_the_checkouts_feedwatch_and_exits_are_restarted(
    kube: KubeEnv, namespace: str, node: ProcessNode, out: Path
) -> None:
    body = deployment("entry", out, args=["--version"])
    kube.apps_v1.create_namespaced_deployment(namespace, body)
    restarted = wait_until(
        lambda: [p for p in node.all({APP: "entry"}) if p.restarts >= 2],
        timeout=60,
        message=lambda: f"the exited container restarted twice\n{node.dump()}",
    )
    (p,) = restarted
    assert p.argv[1:] == ["-m", "feedwatch", "--version"]
    assert p.exit_codes[:2] == [0, 0]
    assert p.output().count("feedwatch 0.") >= 2
