"""Test support: the feedwatch operator as a real subprocess, and FeedWatcher helpers.

``OperatorProcess`` runs ``python -m feedwatch operator --namespace NS ...``
against the ``kube`` environment's KUBECONFIG, logs to a file (its tail is
printed when a test fails), waits for ``/healthz`` and stops with SIGTERM.

Two ways to use it:

- one operator per test module, serving a namespace *pattern* (kopf's
  ``--namespace 'fwop-abc123-*'``): the module-scoped fixture
  ``shared_operator`` starts it and ``operator_namespace`` gives each test a
  fresh namespace that matches the pattern (the operator picks it up as it
  appears). This is what keeps the suite fast: one process start per module.
- ``OperatorProcess(kube, namespaces=[namespace], ...)`` as a context manager
  in a test that needs its own operator (e.g. one it stops and starts).

``tests/operator/conftest.py`` makes the fixtures (``crd``, ``shared_operator``,
``operator_namespace``) available to every test there; elsewhere, import them::

    from tests.support.kube_operator import crd, operator_namespace, shared_operator  # noqa: F401

Helpers: :func:`create_database_secret`, :func:`feedwatcher` (a FeedWatcher
dict with test defaults), :func:`create_feedwatcher`, :func:`patch_spec`,
:func:`read_feedwatcher`, :func:`read_deployment`, :func:`wait_for_condition`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.support import processes
from tests.support.kubernetes import (
    KubeEnv,
    _namespace_name,
    create_namespace,
    setup_or_call_failed,
)
from tests.support.ports import free_port
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = REPO_ROOT / "crds" / "feedwatcher.yaml"
CRD_NAME = "feedwatchers.feedwatch.dev"
GROUP, VERSION, PLURAL = "feedwatch.dev", "v1alpha1", "feedwatchers"
MARIADB_URL = os.environ.get(
    "FEEDWATCH_TEST_MARIADB_URL", "mysql+pymysql://feedwatch:feedwatch@127.0.0.1:13306/feedwatch"
)
#: The image the test operator puts in Deployments (kwok never pulls it).
TEST_IMAGE = "registry.invalid/feedwatch:test"
#: Secrets are re-read this often by the test operator (the product default is 10 s).
TEST_SECRET_CHECK_INTERVAL = 1.0
START_TIMEOUT = 60.0


class OperatorProcess:
    """``feedwatch operator`` in a subprocess; a context manager (start on enter, SIGTERM on exit)."""

    def __init__(
        self,
        kube: KubeEnv,
        *,
        namespaces: Sequence[str],
        log_path: Path,
        watcher_image: str = TEST_IMAGE,
        secret_check_interval: float = TEST_SECRET_CHECK_INTERVAL,
        env: Mapping[str, str] | None = None,
        prefix: str = "",
    ) -> None:
        self.kube = kube
        #: For a pattern-serving operator: the prefix of the namespaces it serves.
        self.prefix = prefix
        self.namespaces = list(namespaces)
        self.log_path = log_path
        self.port = free_port()
        self.watcher_image = watcher_image
        self.env = {
            **kube.env,
            "FEEDWATCH_OPERATOR_SECRET_CHECK_INTERVAL": str(secret_check_interval),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        flags = [arg for ns in self.namespaces for arg in ("--namespace", ns)]
        return [
            sys.executable,
            "-m",
            "feedwatch",
            "operator",
            *flags,
            "--watcher-image",
            self.watcher_image,
            "--health-port",
            str(self.port),
            "--log-format",
            "text",
        ]

    def start(self) -> OperatorProcess:
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        wait_until(
            self.healthy,
            timeout=START_TIMEOUT,
            message=lambda: f"the operator's /healthz on port {self.port}\n{self.log_tail()}",
        )
        return self

    def healthy(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"the operator exited ({self.returncode})\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics (0 when absent)."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        sample = f"{name}{{{wanted}}}" if labels else name
        for line in self.metrics().splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
        return 0.0

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        process = self.process
        if process is None or process.poll() is not None:
            return self.returncode
        return processes.stop(process, timeout=timeout)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no operator log)"
        return f"--- operator log {self.log_path} (tail) ---\n" + "\n".join(text)

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the CRD -------------------------------------------------------------------
_installed: set[str] = set()


def apply_crd(kube: KubeEnv) -> None:
    """Apply ``crds/feedwatcher.yaml`` and wait until it is established and discoverable.

    Discoverable matters: an operator started right after a CRD is re-created, before the
    API server's discovery lists it, would find no FeedWatcher resource to watch.
    """
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    kube.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    wait_until(
        lambda: kube.kubectl("get", "fw", "-A", check=False).returncode == 0,
        timeout=30,
        message="kubectl to discover feedwatchers",
    )


def install_crd(kube: KubeEnv) -> None:
    """:func:`apply_crd`, once per environment."""
    if str(kube.dir) in _installed:
        return
    apply_crd(kube)
    _installed.add(str(kube.dir))


@pytest.fixture(scope="session")
def crd(kube: KubeEnv) -> KubeEnv:
    """The FeedWatcher CRD installed in the session's environment."""
    install_crd(kube)
    return kube


@pytest.fixture(scope="module")
def shared_operator(crd: KubeEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """One operator per test module, serving the namespaces ``operator_namespace`` creates."""
    prefix = f"fwop-{uuid.uuid4().hex[:6]}"
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    operator = OperatorProcess(crd, namespaces=[f"{prefix}-*"], log_path=log_path, prefix=prefix)
    with operator:
        yield operator
    assert operator.returncode == 0, f"the operator exited {operator.returncode}\n{operator.log_tail()}"


@pytest.fixture
def operator_namespace(shared_operator: OperatorProcess, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace served by the module's operator; dumped (with the operator log) on failure."""
    kube = shared_operator.kube
    prefix = shared_operator.prefix
    stem = _namespace_name(request.node.name)[2:-7][:40].strip("-")  # without "t-" and the suffix
    name = f"{prefix}-{stem}-{uuid.uuid4().hex[:6]}"
    create_namespace(kube, name)
    yield name
    if setup_or_call_failed(request):
        print(f"\n===== Kubernetes state of namespace {name} at failure =====")
        print(kube.dump_namespace(name))
        print(kube.kubectl("get", "fw", "-n", name, "-o", "yaml", check=False).stdout)
        print(shared_operator.log_tail(120))
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


# -- objects -------------------------------------------------------------------
def create_database_secret(
    kube: KubeEnv, namespace: str, *, name: str = "feedwatch-db", url: str = MARIADB_URL, key: str = "url"
) -> dict[str, Any]:
    """A Secret holding a database URL (MariaDB by default); returns it as the API does."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64.b64encode(url.encode()).decode()},
    }
    return _json(kube.core_v1.create_namespaced_secret(namespace, body, _preload_content=False))


def replace_secret_data(kube: KubeEnv, namespace: str, name: str, data: Mapping[str, str]) -> None:
    """Set the Secret's data to ``data`` (plain text values)."""
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    kube.core_v1.patch_namespaced_secret(name, namespace, {"data": encoded})


def feedwatcher(name: str, *, secret: str = "feedwatch-db", **spec: Any) -> dict[str, Any]:  # noqa: S107
    """A FeedWatcher dict: a handler URL and the database Secret, overridden by ``spec``."""
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FeedWatcher",
        "metadata": {"name": name},
        "spec": {
            "database": {"urlSecretRef": {"name": secret}},
            "handler": {"url": "http://handler.invalid:8000/"},
            "watcher": {"gracePeriodSeconds": 5},
        },
    }
    body["spec"].update(spec)
    return body


def create_feedwatcher(kube: KubeEnv, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return _json(
        kube.custom_objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, dict(body), _preload_content=False
        )
    )


def read_feedwatcher(kube: KubeEnv, namespace: str, name: str) -> dict[str, Any]:
    return _json(
        kube.custom_objects.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _preload_content=False
        )
    )


def patch_spec(kube: KubeEnv, namespace: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch of the FeedWatcher's spec (``None`` values remove fields)."""
    return _json(
        kube.custom_objects.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"spec": dict(spec)},
            _content_type="application/merge-patch+json",
            _preload_content=False,
        )
    )


def read_deployment(kube: KubeEnv, namespace: str, name: str) -> dict[str, Any] | None:
    """The Deployment as raw JSON (camelCase), or None."""
    try:
        return _json(kube.apps_v1.read_namespaced_deployment(name, namespace, _preload_content=False))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def condition(body: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def wait_for_condition(
    kube: KubeEnv,
    namespace: str,
    name: str,
    type_: str,
    *,
    status: str | None = "True",
    reason: str | None = None,
    timeout: float = 60.0,
    operator: OperatorProcess | None = None,
) -> dict[str, Any]:
    """Wait until the status judges the current generation and ``type_`` is as given; returns the FW."""

    def check() -> dict[str, Any] | None:
        body = read_feedwatcher(kube, namespace, name)
        status_ = body.get("status") or {}
        if status_.get("observedGeneration") != body["metadata"]["generation"]:
            return None
        cond = condition(body, type_)
        if status is not None and cond.get("status") != status:
            return None
        if reason is not None and cond.get("reason") != reason:
            return None
        return body

    def explain() -> str:
        try:
            current = json.dumps(read_feedwatcher(kube, namespace, name).get("status"), indent=1)
        except Exception as error:  # diagnostics only
            current = repr(error)
        tail = operator.log_tail() if operator is not None else ""
        return f"{namespace}/{name}: {type_}={status} ({reason}); status now: {current}\n{tail}"

    found = wait_until(check, timeout=timeout, message=explain)
    assert found is not None
    return found


def events(kube: KubeEnv, namespace: str, name: str) -> list[dict[str, Any]]:
    """The core/v1 Events about the FeedWatcher ``name``."""
    body = _json(
        kube.core_v1.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}", _preload_content=False
        )
    )
    return [e for e in body.get("items") or [] if e["involvedObject"].get("kind") == "FeedWatcher"]


def _json(response: Any) -> dict[str, Any]:
    return dict(json.loads(response.data))


__all__ = [
    "CRD_PATH",
    "MARIADB_URL",
    "TEST_IMAGE",
    "OperatorProcess",
    "condition",
    "crd",
    "create_database_secret",
    "create_feedwatcher",
    "events",
    "feedwatcher",
    "install_crd",
    "operator_namespace",
    "patch_spec",
    "read_deployment",
    "read_feedwatcher",
    "replace_secret_data",
    "shared_operator",
    "wait_for_condition",
]
