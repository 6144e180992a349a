"""The "process node": runs the containers of kwok's simulated pods as local processes.

A TEST FIXTURE, NOT PRODUCT CODE. kwok simulates the node: it marks pods
Running and Ready but runs no container. This module stands in for the
kubelet's container runtime, so a test can see that what the operator writes
really runs: for each pod bound to the kwok node that is Running, it resolves
each container's environment as the kubelet would and starts the container's
``command`` + ``args`` as a local process; when the pod is deleted it sends
SIGTERM, then SIGKILL after the pod's ``terminationGracePeriodSeconds``.

What the kubelet would do, and what is done here:

- env: ``value`` (with ``$(VAR)`` references to earlier variables expanded,
  ``$$`` escaping), ``valueFrom.secretKeyRef`` / ``configMapKeyRef`` (honouring
  ``optional``), ``valueFrom.fieldRef`` (``metadata.name``, ``metadata.namespace``,
  ``metadata.uid``, ``metadata.labels['k']``, ``metadata.annotations['k']``,
  ``spec.nodeName``, ``spec.serviceAccountName``, ``status.podIP``);
  ``envFrom`` ``secretRef`` / ``configMapRef`` with ``prefix``; ``env`` wins over
  ``envFrom``. A reference that cannot be resolved keeps the container from
  starting (the kubelet's ``CreateContainerConfigError``): it is recorded in
  :attr:`PodProcess.error` and retried at the next poll.
- ``command`` / ``args`` with ``$(VAR)`` expanded. An absent ``command`` is
  the image's ENTRYPOINT, ``feedwatch``: the checkout's feedwatch
  (``sys.executable -m feedwatch``, PYTHONPATH set as in
  ``tests/support/processes.py``); absent ``args`` too is the image's CMD,
  ``watch``. A ``command`` whose first word is ``feedwatch``, ``python`` or
  ``python3`` runs the same way / with this interpreter.
- ``restartPolicy: Always``: a container that exits is restarted with the
  kubelet's doubling back-off (here 0.5 s .. 10 s), counted in ``restarts``.

The departures, because these are processes on one host rather than pods:

- The environment starts from PATH, PYTHONPATH and LANG/LC_* of the test
  process only, then the container's env.
- All pods share the host's network, so each process gets a free
  ``FEEDWATCH_HEALTH_PORT`` (overriding the container's value, recorded in
  :attr:`PodProcess.health_port`) instead of the pod's own port 8080.
- The working directory is a fresh directory per pod; volumes, probes,
  resources and the security context are not applied.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.support.kubernetes import KubeEnv
from tests.support.ports import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = [sys.executable, "-m", "feedwatch"]
DEFAULT_CMD = ["watch"]
RESTART_BACKOFF = (0.5, 10.0)  # first delay, cap (s)


class EnvResolutionError(Exception):
    """A container's env names something that does not exist (CreateContainerConfigError)."""


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion: known names replaced, unknown left as written, ``$$`` -> ``$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(one, text)


_FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """The value of a ``fieldRef.fieldPath`` for this pod, as the downward API gives it."""
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    match = _FIELD_KEY.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise EnvResolutionError(f"fieldRef {path!r} is not supported by the process node")


class Lookup:
    """Reads Secrets and ConfigMaps of one namespace (the kubelet's view of them)."""

    def __init__(self, core_v1: Any, namespace: str) -> None:
        self.core_v1 = core_v1
        self.namespace = namespace

    def data(self, kind: str, name: str) -> dict[str, str] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            if kind == "Secret":
                obj = self.core_v1.read_namespaced_secret(name, self.namespace)
                return {k: base64.b64decode(v).decode() for k, v in (obj.data or {}).items()}
            obj = self.core_v1.read_namespaced_config_map(name, self.namespace)
            return dict(obj.data or {})
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise


def _ref_value(lookup: Lookup, kind: str, ref: Mapping[str, Any], var: str) -> str | None:
    data = lookup.data(kind, ref["name"])
    optional = bool(ref.get("optional"))
    if data is None:
        if optional:
            return None
        raise EnvResolutionError(f"env {var}: {kind} {ref['name']!r} not found")
    if ref["key"] not in data:
        if optional:
            return None
        raise EnvResolutionError(f"env {var}: key {ref['key']!r} not in {kind} {ref['name']!r}")
    return data[ref["key"]]


_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def resolve_env(pod: Mapping[str, Any], container: Mapping[str, Any], lookup: Lookup) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then env in order."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            ref = source.get(key)
            if ref is None:
                continue
            data = lookup.data(kind, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise EnvResolutionError(f"envFrom: {kind} {ref['name']!r} not found")
            for key_name, text in data.items():
                if _ENV_NAME.match(prefix + key_name):  # the kubelet skips invalid names
                    env[prefix + key_name] = text
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var or var["valueFrom"] is None:
            env[name] = expand(var.get("value") or "", env)
            continue
        source = var["valueFrom"]
        value: str | None = None
        if source.get("secretKeyRef"):
            value = _ref_value(lookup, "Secret", source["secretKeyRef"], name)
        elif source.get("configMapKeyRef"):
            value = _ref_value(lookup, "ConfigMap", source["configMapKeyRef"], name)
        elif source.get("fieldRef"):
            value = field_value(pod, source["fieldRef"]["fieldPath"])
        else:
            raise EnvResolutionError(f"env {name}: valueFrom {sorted(source)} is not supported")
        if value is not None:
            env[name] = value
    return env


def command_line(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """``command`` + ``args`` with ``$(VAR)`` expanded; the image's ENTRYPOINT/CMD when absent."""
    command = [expand(word, env) for word in container.get("command") or []]
    args = [expand(word, env) for word in container.get("args") or []]
    if not command:
        return [*ENTRYPOINT, *(args or DEFAULT_CMD)]
    if command[0] == "feedwatch":
        return [*ENTRYPOINT, *command[1:], *args]
    if command[0] in ("python", "python3"):
        return [sys.executable, *command[1:], *args]
    return [*command, *args]


def base_env() -> dict[str, str]:
    """What every process gets before the container's env: PATH, the checkout on PYTHONPATH, locale."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG") or k.startswith("LC_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "operator")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclasses.dataclass
class PodProcess:
    """One container of one pod, and the local process that runs it."""

    namespace: str
    pod: str
    uid: str
    container: str
    log: Path
    grace_seconds: float
    labels: dict[str, str]
    health_port: int = 0
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    argv: list[str] = dataclasses.field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    pids: list[int] = dataclasses.field(default_factory=list)  # every start, restarts included
    exit_codes: list[int] = dataclasses.field(default_factory=list)
    restarts: int = 0
    error: str | None = None  # why it could not start (last attempt)
    terminating: bool = False
    killed: bool = False  # SIGKILL after the grace period
    next_start: float = 0.0
    kill_at: float = 0.0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


class ProcessNode:
    """Polls the pods of ``namespace`` on the kwok node and keeps one process per Running container.

    Use it as a context manager; ``stop()`` terminates every process it started.
    """

    def __init__(
        self,
        kube: KubeEnv,
        namespace: str,
        workdir: Path,
        *,
        node: str | None = None,
        interval: float = 0.2,
    ) -> None:
        from kubernetes import client
        from kubernetes import config as kconfig

        self.kube = kube
        self.namespace = namespace
        self.node = node or kube.node
        self.workdir = workdir
        self.interval = interval
        # its own client: the poll thread must not share the test's connection pool
        self._api = kconfig.new_client_from_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
        self._core = client.CoreV1Api(self._api)
        self._lookup = Lookup(self._core, namespace)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.processes: dict[tuple[str, str], PodProcess] = {}  # (pod uid, container)
        self.poll_errors: list[str] = []

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> ProcessNode:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="process-node", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling, SIGTERM every live process, SIGKILL what outlives its grace period."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        with self._lock:
            live = [p for p in self.processes.values() if p.running]
            for p in live:
                self._terminate(p)
        deadline = time.monotonic() + max((p.grace_seconds for p in live), default=0) + 5
        for p in live:
            assert p.proc is not None
            try:
                p.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.killed = True
                p.proc.wait(10)
            self._reap(p)
        self._api.close()

    def __enter__(self) -> ProcessNode:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- queries for tests -------------------------------------------------------------
    def live(self, label_selector: Mapping[str, str] | None = None) -> list[PodProcess]:
        """Processes running now (not terminating), optionally of pods with these labels."""
        with self._lock:
            return [
                p
                for p in self.processes.values()
                if p.running
                and not p.terminating
                and all(p.labels.get(k) == v for k, v in (label_selector or {}).items())
            ]

    def all(self, label_selector: Mapping[str, str] | None = None) -> list[PodProcess]:
        with self._lock:
            return [
                p
                for p in self.processes.values()
                if all(p.labels.get(k) == v for k, v in (label_selector or {}).items())
            ]

    def wait_for(
        self,
        count: int,
        label_selector: Mapping[str, str] | None = None,
        *,
        timeout: float = 60,
    ) -> list[PodProcess]:
        """Wait until exactly ``count`` processes run, every other one has exited and been reaped."""

        def check() -> tuple[list[PodProcess]] | None:  # a tuple: truthy even when empty
            with self._lock:
                live = self.live(label_selector)
                settled = all(
                    len(p.exit_codes) == len(p.pids) for p in self.all(label_selector) if p not in live
                )
            return (live,) if len(live) == count and settled else None

        found = wait_until(
            check,
            timeout=timeout,
            message=lambda: f"{count} processes for {label_selector}\n{self.dump()}",
        )
        assert found is not None
        return found[0]

    def dump(self, tail: int = 4000) -> str:
        """Every process's state and log tail, for failure messages."""
        parts = []
        with self._lock:
            rows = list(self.processes.values())
        for p in rows:
            state = "running" if p.running else f"exited {p.exit_codes}"
            parts.append(
                f"----- pod {p.pod} container {p.container}: {state}, pids {p.pids}, "
                f"restarts {p.restarts}, terminating {p.terminating}, killed {p.killed}, "
                f"health port {p.health_port}, error {p.error}\n$ {' '.join(p.argv)}\n" + p.output()[-tail:]
            )
        if self.poll_errors:
            parts.append("----- poll errors\n" + "\n".join(self.poll_errors[-5:]))
        return "\n".join(parts) or "(the process node started no process)"

    # -- the poll loop ------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as exc:  # a failed poll is retried; recorded for dumps
                self.poll_errors.append(repr(exc))
            self._stop.wait(self.interval)

    def _sync(self) -> None:
        pods = self._api.sanitize_for_serialization(
            self._core.list_namespaced_pod(self.namespace, field_selector=f"spec.nodeName={self.node}")
        )["items"]
        wanted: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]] = {}
        for pod in pods:
            meta = pod["metadata"]
            if meta.get("deletionTimestamp") or pod.get("status", {}).get("phase") != "Running":
                continue
            for container in pod["spec"]["containers"]:
                wanted[(meta["uid"], container["name"])] = (pod, container)
        now = time.monotonic()
        with self._lock:
            for key, p in self.processes.items():
                if key not in wanted and not p.terminating:
                    self._terminate(p)
                if p.terminating and p.running and now >= p.kill_at:
                    assert p.proc is not None
                    p.proc.kill()
                    p.killed = True
                if p.terminating and p.proc is not None and not p.running:
                    self._reap(p)
            for key, (pod, container) in wanted.items():
                p = self.processes.get(key) or self._new(pod, container)
                self.processes[key] = p
                if p.proc is not None and not p.running:
                    self._reap(p)  # exited by itself: restartPolicy Always
                    p.restarts += 1
                    delay = min(RESTART_BACKOFF[0] * 2 ** (p.restarts - 1), RESTART_BACKOFF[1])
                    p.next_start = now + delay
                if p.proc is None and now >= p.next_start:
                    self._launch(p, pod, container)

    def _new(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> PodProcess:
        meta = pod["metadata"]
        name = f"{meta['name']}.{container['name']}"
        return PodProcess(
            namespace=meta["namespace"],
            pod=meta["name"],
            uid=meta["uid"],
            container=container["name"],
            log=self.workdir / f"{name}.log",
            grace_seconds=float(pod["spec"].get("terminationGracePeriodSeconds", 30)),
            labels=dict(meta.get("labels") or {}),
        )

    def _launch(self, p: PodProcess, pod: Mapping[str, Any], container: Mapping[str, Any]) -> None:
        try:
            resolved = resolve_env(pod, container, self._lookup)
        except EnvResolutionError as exc:
            p.error = str(exc)
            return
        p.error = None
        p.health_port = free_port()
        resolved["FEEDWATCH_HEALTH_PORT"] = str(p.health_port)
        p.env = resolved
        p.argv = command_line(container, resolved)
        cwd = self.workdir / f"{p.pod}.{p.container}.cwd"
        cwd.mkdir(exist_ok=True)
        with p.log.open("ab") as out:
            out.write(f"=== process node: start #{len(p.pids) + 1}: {' '.join(p.argv)}\n".encode())
            out.flush()
            p.proc = subprocess.Popen(
                p.argv,
                env={**base_env(), **resolved},
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # signals reach the container's process only
            )
        p.pids.append(p.proc.pid)

    def _terminate(self, p: PodProcess) -> None:
        p.terminating = True
        p.kill_at = time.monotonic() + p.grace_seconds
        if p.running:
            assert p.proc is not None
            with contextlib.suppress(ProcessLookupError):
                p.proc.send_signal(signal.SIGTERM)

    @staticmethod
    def _reap(p: PodProcess) -> None:
        assert p.proc is not None
        code = p.proc.wait(10)
        if len(p.exit_codes) < len(p.pids):
            p.exit_codes.append(code)
        if not p.terminating:
            p.proc = None  # restart later


@contextlib.contextmanager
def process_node(kube: KubeEnv, namespace: str, workdir: Path, **kwargs: Any) -> Iterator[ProcessNode]:
    """``with process_node(kube, namespace, tmp_path / "node") as node: ...``; dumps logs on error."""
    node = ProcessNode(kube, namespace, workdir, **kwargs).start()
    try:
        yield node
    except BaseException:
        print(f"\n===== process node of namespace {namespace} =====\n{node.dump()}")
        raise
    finally:
        node.stop()
