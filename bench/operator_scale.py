"""Scenario 7: the operator with 200 FeedWatchers created at once.

    python -m bench --scenarios 7 --databases mariadb   # as part of `make bench`
    python -m bench.operator_scale --count 200          # on its own; prints the figures as JSON

It starts its own Kubernetes environment (``hack/k8s-env up`` in a temporary
directory: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
kwok), adds kwok nodes so every pod fits (110 pods per node), installs the
CRD, and runs ``feedwatch operator`` as a subprocess at its product defaults
under its own ServiceAccount, so the API server counts its requests apart
from everyone else's (FlowSchemas: ``tests/support/api_requests.py``). Then it
creates the FeedWatchers at once (32 client threads), one Secret with the
MariaDB URL for all, and measures:

- seconds from the first create until every Deployment exists, and until
  every FeedWatcher is Ready (its status judges its generation): the second
  includes kube-controller-manager making ReplicaSets and pods, the
  scheduler binding them and kwok marking them Ready;
- the operator's peak RSS and its CPU while creating (psutil);
- API requests (reads and writes) per FeedWatcher, as the API server counted them;
- steady-state writes per minute: once nothing has been written for 5 s, a
  60 s window with nothing changing.

Goals (issue 11, this 2-core machine): all Ready < 60 s, RSS < 250 MB,
0 steady-state writes per minute. No watcher runs (kwok runs no container):
the database work is the operator's own (migration check, feed rows).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from bench.harness import ROOT

if TYPE_CHECKING:
    from tests.support.kubernetes import KubeEnv

NAMESPACE = "bench-operator"
PODS_PER_NODE = 100  # kwok nodes allow 110; keep headroom
CREATE_THREADS = 32
SETTLE_QUIET = 5.0
GOALS = {"ready_s": 60.0, "rss_peak_mb": 250.0, "steady_writes_per_min": 0.0}


@dataclass
class Result:
    count: int
    create_s: float = math.nan  # issuing the creates
    deployments_s: float = math.nan  # first create -> every Deployment exists
    available_s: float = math.nan  # first create -> every Deployment available (pods Ready by kwok)
    ready_s: float = math.nan  # first create -> every FeedWatcher Ready
    rss_start_mb: float = math.nan
    rss_peak_mb: float = math.nan
    rss_end_mb: float = math.nan
    cpu_create_s: float = math.nan  # operator CPU seconds, first create -> all Ready
    cpu_steady_pct: float = math.nan  # of one core, during the steady window
    requests_per_fw: float = math.nan
    writes_per_fw: float = math.nan
    reads_per_fw: float = math.nan
    writes_by_kind: dict[str, int] = field(default_factory=dict)
    settle_s: float = math.nan  # all Ready -> 5 s without a write
    steady_window_s: float = math.nan
    steady_writes: int = -1
    steady_reads: int = -1
    steady_writes_per_min: float = math.nan
    nodes: int = 0
    rate_limiter_wait_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- environment -------------------------------------------------------------------


@contextmanager
def kubernetes_env(work: Path) -> Iterator[KubeEnv]:
    """A private control plane (``hack/k8s-env up``), stopped on exit."""
    from tests.support.kubernetes import _load_env

    env_dir = work / "k8s-env"
    log = work / "k8s-env.log"
    script = ROOT / "hack" / "k8s-env"
    with log.open("a") as out:
        subprocess.run(["bash", str(script), "build"], check=True, stdout=out, stderr=out, timeout=3600)
        started = subprocess.run(
            ["bash", str(script), "up", str(env_dir), "--owner-pid", str(os.getpid())],
            stdout=out,
            stderr=out,
            timeout=300,
            check=False,
        )
    try:
        if started.returncode != 0:
            raise RuntimeError(f"hack/k8s-env up failed; see {log}:\n{log.read_text()[-3000:]}")
        kube = _load_env(env_dir, owned=True)
        try:
            yield kube
        finally:
            kube.api_client.close()
    finally:
        with log.open("a") as out:
            down = ["bash", str(script), "down", str(env_dir)]
            subprocess.run(down, check=False, stdout=out, stderr=out, timeout=120)


def add_nodes(kube: KubeEnv, pods: int) -> int:
    """kwok nodes enough for ``pods`` (the environment has one); returns how many there are."""
    wanted = max(1, math.ceil(pods / PODS_PER_NODE))
    nodes: list[dict[str, Any]] = []
    for n in range(1, wanted):
        name = f"kwok-node-bench-{n}"
        nodes.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {
                        "type": "kwok",
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                    },
                },
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                },
            }
        )
    if nodes:
        kube.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes})
        )
        for node in nodes:
            kube.kubectl("wait", "--for=condition=Ready", f"node/{node['metadata']['name']}", "--timeout=60s")
    return wanted


# -- measuring -------------------------------------------------------------------


class Sampler:
    """The operator's RSS (with any children) every 0.2 s, in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def rss(self) -> int:
        procs = [self.process, *self.process.children(recursive=True)]
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def cpu(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system + times.children_user + times.children_system)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.rss())
            except psutil.NoSuchProcess:
                return
            self._stop.wait(0.2)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _ready(fw: dict[str, Any]) -> bool:
    status = fw.get("status") or {}
    if status.get("observedGeneration") != fw["metadata"]["generation"]:
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _progress(kube: KubeEnv) -> tuple[int, int, int]:
    """(Deployments that exist, Deployments available, FeedWatchers Ready) in the namespace."""
    from tests.support.kube_operator import GROUP, PLURAL, VERSION

    deployments = json.loads(kube.apps_v1.list_namespaced_deployment(NAMESPACE, _preload_content=False).data)[
        "items"
    ]
    fws = kube.custom_objects.list_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, _preload_content=False
    )
    available = sum((d.get("status") or {}).get("availableReplicas", 0) >= 1 for d in deployments)
    return len(deployments), available, sum(_ready(fw) for fw in json.loads(fws.data)["items"])


def run(
    db_url: str, work: Path, *, count: int = 200, steady_seconds: float = 60.0
) -> tuple[Result, list[str]]:
    """Measure the operator at ``count`` FeedWatchers; returns the result and the feeds it created."""
    from tests.support.api_requests import OperatorIdentity
    from tests.support.kube_operator import OperatorProcess, create_database_secret, feedwatcher, install_crd

    result = Result(count)
    run_id = uuid.uuid4().hex[:6]
    feeds = [f"opbench{run_id}{n:03d}" for n in range(count)]
    with kubernetes_env(work) as kube:
        result.nodes = add_nodes(kube, count)
        install_crd(kube)
        kube.kubectl("create", "namespace", NAMESPACE)
        identity = OperatorIdentity(kube, namespace=NAMESPACE)
        kubeconfig = identity.install(work / "operator.kubeconfig")
        create_database_secret(kube, NAMESPACE, url=db_url)
        operator = OperatorProcess(
            kube,
            namespaces=[NAMESPACE],
            log_path=work / "operator.log",
            secret_check_interval=10.0,  # the product default
            env={"KUBECONFIG": str(kubeconfig), "FEEDWATCH_OPERATOR_LOG_LEVEL": "INFO"},
        )
        with operator:
            assert operator.process is not None
            with Sampler(operator.process.pid) as sampler:
                time.sleep(2.0)  # let kopf's initial listing finish before the baseline
                result.rss_start_mb = sampler.rss() / 2**20
                bodies = [feedwatcher(f"fw-{n:03d}", feed=feed) for n, feed in enumerate(feeds)]
                before = identity.counts()
                cpu_before = sampler.cpu()
                started = time.monotonic()
                with ThreadPoolExecutor(CREATE_THREADS) as pool:
                    list(pool.map(lambda body: _create(kube, body), bodies))
                result.create_s = time.monotonic() - started
                deadline = started + 600
                while time.monotonic() < deadline:
                    deployments, available, ready = _progress(kube)
                    now = time.monotonic() - started
                    if deployments >= count and math.isnan(result.deployments_s):
                        result.deployments_s = now
                    if available >= count and math.isnan(result.available_s):
                        result.available_s = now
                    if ready >= count and math.isnan(result.ready_s):
                        result.ready_s = now
                    if ready >= count and available >= count:
                        break
                    if operator.returncode is not None:
                        raise RuntimeError(f"the operator exited\n{operator.log_tail()}")
                    time.sleep(0.5)
                else:
                    result.notes.append(f"not all Ready after 600 s: {ready}/{count}")
                result.cpu_create_s = sampler.cpu() - cpu_before
                created = identity.counts() - before
                result.requests_per_fw = created.total / count
                result.writes_per_fw = created.total_writes / count
                result.reads_per_fw = created.reads / count
                result.writes_by_kind = dict(created.writes)

                settle_started = time.monotonic()
                last = identity.counts()
                quiet_since = time.monotonic()
                while (
                    time.monotonic() - quiet_since < SETTLE_QUIET and time.monotonic() - settle_started < 120
                ):
                    time.sleep(0.5)
                    now_counts = identity.counts()
                    if now_counts.total_writes != last.total_writes:
                        quiet_since = time.monotonic()
                    last = now_counts
                result.settle_s = time.monotonic() - settle_started - SETTLE_QUIET
                cpu_steady = sampler.cpu()
                window_start = time.monotonic()
                time.sleep(steady_seconds)
                window = identity.counts() - last
                result.steady_window_s = time.monotonic() - window_start
                result.cpu_steady_pct = 100 * (sampler.cpu() - cpu_steady) / result.steady_window_s
                result.steady_writes = window.total_writes
                result.steady_reads = window.reads
                result.steady_writes_per_min = window.total_writes * 60 / result.steady_window_s
                if window.total_writes:
                    result.notes.append(f"steady-state writes: {window.describe()}")
                result.rss_end_mb = sampler.rss() / 2**20
                result.rss_peak_mb = sampler.peak / 2**20
        if operator.returncode not in (0, None):
            result.notes.append(f"the operator exited {operator.returncode} on SIGTERM")
        for component in ("kube-controller-manager", "kube-scheduler"):
            waited, requests = rate_limiter_wait(kube, component)
            result.rate_limiter_wait_s[component] = waited
            result.notes.append(
                f"{component}: {requests:.0f} requests waited {waited:.1f} s in total "
                "for its client-side rate limiter"
            )
    return result, feeds


def rate_limiter_wait(kube: KubeEnv, component: str) -> tuple[float, float]:
    """(seconds, requests) a control-plane component's client spent waiting for its rate limiter.

    From client-go's ``rest_client_rate_limiter_duration_seconds`` on the component's
    /metrics (its secure port, with the admin client certificate).
    """
    import ssl
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    port = json.loads((kube.dir / "env.json").read_text())["ports"][component]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the component's self-signed serving certificate
    pki = kube.dir / "pki"
    context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    url = f"https://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        text = response.read().decode()
    waited = requests = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "rest_client_rate_limiter_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    waited += sample.value
                elif sample.name.endswith("_count"):
                    requests += sample.value
    return waited, requests


def _create(kube: KubeEnv, body: dict[str, Any]) -> None:
    from tests.support.kube_operator import create_feedwatcher

    create_feedwatcher(kube, NAMESPACE, body)


def describe(r: Result) -> str:
    kinds = ", ".join(f"{k} {v}" for k, v in r.writes_by_kind.items() if v)
    return (
        f"{r.count} FeedWatchers ({r.nodes} kwok nodes): creates issued in {r.create_s:.1f} s; "
        f"every Deployment after {r.deployments_s:.1f} s, available after {r.available_s:.1f} s, "
        f"every FeedWatcher Ready after "
        f"{r.ready_s:.1f} s; operator RSS {r.rss_start_mb:.0f} -> peak {r.rss_peak_mb:.0f} MB, "
        f"CPU {r.cpu_create_s:.1f} s while creating, {r.cpu_steady_pct:.1f} % of a core in steady "
        f"state; {r.requests_per_fw:.1f} API requests per FeedWatcher ({r.writes_per_fw:.1f} writes: "
        f"{kinds}); steady state: {r.steady_writes} writes and {r.steady_reads} reads in "
        f"{r.steady_window_s:.0f} s"
    )


# -- as scenario 7 of `python -m bench` ----------------------------------------------


def scenario(ctx: Any, db: Any) -> None:
    """Run once, on MariaDB (PostgreSQL when MariaDB is not selected); never on SQLite."""
    from bench.figures import Target

    names = [d.name for d in ctx.report.databases]
    here = "mariadb" if "mariadb" in names else ("postgresql" if "postgresql" in names else None)
    if db.name != here:
        print(f"  runs once, on {here or 'MariaDB or PostgreSQL (the operator refuses SQLite)'}", flush=True)
        return
    count = 20 if ctx.size.name == "tiny" else 200
    result, feeds = run(db.url, ctx.work, count=count, steady_seconds=60.0)
    db.feeds.extend(feeds)  # dropped by the runner's cleanup
    variant = f"{count} FeedWatchers created at once"
    figures = [
        ("every Deployment exists", "s", result.deployments_s, None),
        ("every Deployment available", "s", result.available_s, None),
        ("every FeedWatcher Ready", "s", result.ready_s, Target("<", GOALS["ready_s"])),
        ("operator peak RSS", "MB", result.rss_peak_mb, Target("<", GOALS["rss_peak_mb"])),
        ("operator CPU until all Ready", "s", result.cpu_create_s, None),
        ("API requests per FeedWatcher", "requests", result.requests_per_fw, None),
        ("API writes per FeedWatcher", "requests", result.writes_per_fw, None),
        ("steady-state writes per minute", "writes/min", result.steady_writes_per_min, Target("<=", 0, "0")),
    ]
    for metric, unit, value, target in figures:
        fig = ctx.figure("7", db, variant, metric, unit, target=target, note="; ".join(result.notes))
        if not math.isnan(value):
            fig.values.append(value)
    print("  " + describe(result), flush=True)
    for note in result.notes:
        print(f"  note: {note}", flush=True)


# -- on its own -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from bench.harness import MARIADB_URL, Database
    from bench.machine import describe as machine

    parser = argparse.ArgumentParser(
        prog="python -m bench.operator_scale", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--count", type=int, default=200, help="FeedWatchers created at once (default 200)")
    parser.add_argument("--steady-seconds", type=float, default=60.0, help="steady-state window (default 60)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="feedwatch-bench-operator-") as tmp:
        work = Path(tmp)
        db = Database("mariadb", work)
        about = machine([db])
        try:
            result, feeds = run(MARIADB_URL, work, count=args.count, steady_seconds=args.steady_seconds)
            db.feeds.extend(feeds)
        finally:
            db.cleanup()
            db.close()
    print(describe(result))
    for note in result.notes:
        print(f"note: {note}")
    for key, value in about.items():
        print(f"{key}: {value}")
    text = json.dumps({**asdict(result), "machine": about}, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    met = (
        result.ready_s < GOALS["ready_s"]
        and result.rss_peak_mb < GOALS["rss_peak_mb"]
        and result.steady_writes_per_min <= GOALS["steady_writes_per_min"]
    )
    print("goals " + ("met" if met else "MISSED") + f": {GOALS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
