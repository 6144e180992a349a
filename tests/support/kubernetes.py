"""pytest plugin: a real Kubernetes control plane for tests.

Register it from the top-level ``tests/conftest.py``::

    pytest_plugins = ["tests.support.kubernetes"]

Fixtures:

``kube`` (session)
    Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
    kwok (with one fake node) through ``hack/k8s-env`` once per session; the
    binaries are built on first use and cached outside the repository.  Yields
    a :class:`KubeEnv`.  If the environment cannot be built or started the
    fixture fails the test with the log tail; it never skips.

``namespace`` (function)
    A fresh namespace per test, deleted afterwards.  When the test fails, the
    namespace's events, pods, deployments and replicasets are printed in the
    teardown section of the test report.

Set ``FEEDWATCH_K8S_ENV_DIR`` to the directory of an environment started by
hand (``hack/k8s-env up DIR``) to reuse it instead of starting one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_ENV = REPO_ROOT / "hack" / "k8s-env"

BUILD_TIMEOUT = float(os.environ.get("FEEDWATCH_K8S_BUILD_TIMEOUT", "3600"))
START_TIMEOUT = float(os.environ.get("FEEDWATCH_K8S_START_TIMEOUT", "180"))
DUMP_LIMIT = 30_000


class KubeCommandError(AssertionError):
    """A kubectl or helm command failed."""


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclasses.dataclass
class KubeEnv:
    """A running environment started by ``hack/k8s-env up``."""

    dir: Path
    kubeconfig: Path
    server: str
    bin_dir: Path
    node: str
    versions: Mapping[str, str]
    api_client: Any  # kubernetes.client.ApiClient
    owned: bool = True

    # -- commands ---------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """Environment for child processes: KUBECONFIG, PATH, helm dirs."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        for var, sub in (
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_DATA_HOME", "data"),
        ):
            env.setdefault(var, str(self.dir / "helm" / sub))
        return env

    def run(
        self,
        tool: str,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run a cached binary (``kubectl``, ``helm``, ...) against this environment."""
        cmd = [str(self.bin_dir / tool), *map(str, args)]
        proc = subprocess.run(
            cmd,
            check=False,
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise KubeCommandError(
                f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, **kwargs)

    def helm(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, **kwargs)

    # -- python client ------------------------------------------------------
    @property
    def core_v1(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    @property
    def apps_v1(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api_client)

    @property
    def apiextensions_v1(self) -> Any:
        from kubernetes import client

        return client.ApiextensionsV1Api(self.api_client)

    @property
    def custom_objects(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api_client)

    def component_log(self, name: str, lines: int = 40) -> str:
        return _tail(self.dir / "logs" / f"{name}.log", lines)

    # -- diagnostics ------------------------------------------------------
    def dump_namespace(self, namespace: str) -> str:
        """Human-readable state of a namespace, for failure reports."""
        parts = []
        for title, args in (
            (
                "events",
                ["get", "events", "-n", namespace, "--sort-by=.lastTimestamp", "-o", "wide"],
            ),
            (
                "deployments, replicasets, pods",
                ["get", "deployments,replicasets,pods", "-n", namespace, "-o", "wide"],
            ),
            ("deployments", ["describe", "deployments", "-n", namespace]),
            ("replicasets", ["describe", "replicasets", "-n", namespace]),
            ("pods", ["describe", "pods", "-n", namespace]),
            ("nodes", ["get", "nodes", "-o", "wide"]),
        ):
            try:
                proc = self.kubectl(*args, check=False, timeout=30)
                out = (proc.stdout + proc.stderr).strip() or "(none)"
            except Exception as exc:  # diagnostics must not raise
                out = f"(could not run kubectl: {exc!r})"
            parts.append(f"----- {title} (namespace {namespace}) -----\n{out}")
        text = "\n".join(parts)
        if len(text) > DUMP_LIMIT:
            text = text[:DUMP_LIMIT] + f"\n... (cut at {DUMP_LIMIT} characters)"
        return text


def _run_k8s_env(args: Sequence[str], log: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    with log.open("a") as fh:
        fh.write(f"$ hack/k8s-env {' '.join(args)}\n")
        fh.flush()
        return subprocess.run(
            ["bash", str(K8S_ENV), *args],
            check=False,
            stdout=subprocess.PIPE,
            stderr=fh,
            text=True,
            timeout=timeout,
            cwd=REPO_ROOT,
        )


def _fail_start(what: str, log: Path, env_dir: Path | None) -> None:
    text = [f"Kubernetes test environment: {what}", f"--- {log} (tail) ---", _tail(log, 60)]
    if env_dir is not None:
        for comp in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
            path = env_dir / "logs" / f"{comp}.log"
            if path.exists():
                text += [f"--- {path} (tail) ---", _tail(path, 20)]
    pytest.fail("\n".join(text), pytrace=False)


def _load_env(env_dir: Path, owned: bool) -> KubeEnv:
    from kubernetes import config as kconfig

    info = json.loads((env_dir / "env.json").read_text())
    # The kubernetes client has no type hints.
    api_client = kconfig.new_client_from_config(config_file=info["kubeconfig"])  # type: ignore[no-untyped-call]
    return KubeEnv(
        dir=env_dir,
        kubeconfig=Path(info["kubeconfig"]),
        server=info["server"],
        bin_dir=Path(info["bin"]),
        node=info["node"],
        versions={
            "kubernetes": info["kube_version"],
            "helm": info["helm_version"],
            "kwok": info["kwok_version"],
            "etcd": info["etcd_version"],
        },
        api_client=api_client,
        owned=owned,
    )


# --------------------------------------------------------------------- hooks
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kubernetes: needs the real Kubernetes test environment (hack/k8s-env)"
    )
    config.addinivalue_line("markers", "chart: tests of the Helm chart")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # item.rep_setup / item.rep_call / item.rep_teardown, read by fixtures
    setattr(item, f"rep_{report.when}", report)
    return report


@dataclasses.dataclass
class _BuildState:
    done: bool = False
    failure: str | None = None


_BUILD = _BuildState()


def _build(config: pytest.Config) -> None:
    """Build (or reuse) the binaries once per session, outside any test's timeout."""
    if _BUILD.done:
        return
    _BUILD.done = True
    failure = None
    fd, name = tempfile.mkstemp(prefix="feedwatch-k8s-build-", suffix=".log")
    os.close(fd)
    log = Path(name)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"hack/k8s-env build (cached after the first build of ~10 min), log: {log}")
    started = time.monotonic()
    try:
        proc = _run_k8s_env(["build"], log, BUILD_TIMEOUT)
        if proc.returncode != 0:
            failure = f"hack/k8s-env build exited {proc.returncode}"
    except subprocess.TimeoutExpired:
        failure = f"hack/k8s-env build timed out after {BUILD_TIMEOUT:.0f}s"
    if failure:
        _BUILD.failure = f"{failure}\n--- {log} (tail) ---\n{_tail(log, 60)}"
    else:
        log.unlink(missing_ok=True)
        if reporter is not None:
            reporter.write_line(f"hack/k8s-env build: {time.monotonic() - started:.1f}s")


def pytest_collection_finish(session: pytest.Session) -> None:
    # pytest-timeout counts fixture setup in a test's time, and a first build
    # takes far longer than one test may: build before the first test runs.
    if os.environ.get("FEEDWATCH_K8S_ENV_DIR") or session.config.option.collectonly:
        return
    if any("kube" in getattr(item, "fixturenames", ()) for item in session.items):
        _build(session.config)


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[KubeEnv]:
    """The running Kubernetes test environment (started once per session)."""
    reuse = os.environ.get("FEEDWATCH_K8S_ENV_DIR")
    if reuse:
        env_dir = Path(reuse).resolve()
        if not (env_dir / "env.json").exists():
            pytest.fail(f"FEEDWATCH_K8S_ENV_DIR={reuse} holds no environment (run hack/k8s-env up {reuse})")
        env = _load_env(env_dir, owned=False)
        try:
            env.kubectl("get", "--raw", "/readyz", timeout=10)
        except Exception as exc:
            pytest.fail(f"environment in {env_dir} is not ready: {exc}", pytrace=False)
        yield env
        env.api_client.close()
        return

    base = tmp_path_factory.mktemp("k8s-env")
    log = base / "k8s-env.log"
    env_dir = base / "env"
    _build(pytestconfig)  # no-op when pytest_collection_finish did it
    if _BUILD.failure:
        pytest.fail(f"Kubernetes test environment: {_BUILD.failure}", pytrace=False)

    started = False
    try:
        try:
            proc = _run_k8s_env(["up", str(env_dir), "--owner-pid", str(os.getpid())], log, START_TIMEOUT)
        except subprocess.TimeoutExpired:
            _fail_start(f"start timed out after {START_TIMEOUT:.0f}s", log, env_dir)
        if proc.returncode != 0:
            _fail_start(f"hack/k8s-env up exited {proc.returncode}", log, env_dir)
        started = True
        env = _load_env(env_dir, owned=True)
        try:
            yield env
        finally:
            env.api_client.close()
    finally:
        if started or env_dir.exists():
            _run_k8s_env(["down", str(env_dir)], log, 120)


_NS_INVALID = re.compile(r"[^a-z0-9-]+")


def _namespace_name(test_name: str) -> str:
    stem = test_name.lower().removeprefix("test_").replace("_", "-")
    stem = _NS_INVALID.sub("-", stem).strip("-")
    suffix = uuid.uuid4().hex[:6]
    stem = stem[: 63 - len("t--") - len(suffix)].strip("-") or "ns"
    return f"t-{stem}-{suffix}"


def create_namespace(kube: KubeEnv, name: str) -> None:
    """Create a test's namespace and wait until it takes pods."""
    from kubernetes import client

    kube.core_v1.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"feedwatch.test/namespace": "true"})
        )
    )
    # Pods are rejected until the service-account controller made "default".
    wait_until(
        lambda: kube.core_v1.read_namespaced_service_account("default", name),
        timeout=30,
        message=f"service account default in namespace {name}",
    )


def setup_or_call_failed(request: pytest.FixtureRequest) -> bool:
    """In a fixture's teardown: whether the test's setup or call failed (so its state is dumped)."""
    return any(
        getattr(getattr(request.node, f"rep_{when}", None), "failed", False) for when in ("setup", "call")
    )


@pytest.fixture
def namespace(kube: KubeEnv, request: pytest.FixtureRequest) -> Iterator[str]:
    """A unique namespace for one test; deleted afterwards, dumped on failure."""
    from kubernetes.client.exceptions import ApiException

    name = _namespace_name(request.node.name)
    create_namespace(kube, name)
    yield name

    if setup_or_call_failed(request):
        print(f"\n===== Kubernetes state of namespace {name} at failure =====")
        print(kube.dump_namespace(name))
    try:
        kube.core_v1.delete_namespace(name, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise
