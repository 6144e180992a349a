"""The production image, built with podman (hack/image) and run for real.

No Docker engine and no registry here: ``hack/image build`` bootstraps a Debian
base (cached outside the repository), builds a wheelhouse from the pinned
constraints and builds the Dockerfile offline with podman and runc. Then the
image runs as the product runs it: the non-root user, a read-only root
filesystem with a tmpfs at /tmp, host network to reach MariaDB and a real
HTTP handler process on loopback. Nothing is skipped: without podman (and no
apt-get to install it) the build fails and so does every test here.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedwatch import Feed
from tests.conftest import MARIADB_URL, database_url
from tests.service.helpers import close_stores, history, store_for
from tests.support.handler import Handler
from tests.support.kubernetes import KubeEnv
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
HACK_IMAGE = ROOT / "hack" / "image"
#: How the product runs the image: numeric user, read-only root, writable /tmp only.
HARDENED = ["--read-only", "--tmpfs", "/tmp:rw,size=64m,mode=1777", "--user", "10001:10001"]
PARTITIONS, ITEMS, LAST_GATE = 4, 5, 2


def _timed(what: str, started: float) -> None:
    print(f"[image] {what}: {time.monotonic() - started:.1f} s")


@pytest.fixture(scope="module")
def image() -> str:
    """Build (or reuse the cached layers of) the image; its tag."""
    started = time.monotonic()
    build = subprocess.run(
        ["bash", str(HACK_IMAGE), "build"], capture_output=True, text=True, timeout=1700, check=False
    )
    _timed("hack/image build", started)
    assert build.returncode == 0, f"hack/image build failed:\n{build.stderr[-6000:]}"
    print("\n".join(line for line in build.stderr.splitlines() if line.startswith("[image ")))
    tag = build.stdout.strip().splitlines()[-1]
    assert tag.startswith("localhost/feedwatch:"), build.stdout
    return tag


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``hack/image run --rm ARGS``: podman run with the runtime and ulimits this host accepts."""
    return subprocess.run(
        ["bash", str(HACK_IMAGE), "run", "--rm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_container(name: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``hack/image run`` in the background as the product runs it (host network, hardened), into ``log``."""
    command = ["bash", str(HACK_IMAGE), "run", "--rm", "--name", name, "--network", "host", *HARDENED, *args]
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def stop_container(container: subprocess.Popen[bytes], name: str) -> int:
    """SIGTERM (podman run forwards it to the container); its exit code. Removed by force after 60 s."""
    if container.poll() is None:
        container.send_signal(signal.SIGTERM)
    try:
        return container.wait(60)
    except subprocess.TimeoutExpired:
        subprocess.run(["podman", "rm", "--force", name], capture_output=True, check=False)
        return container.wait(30)


def test_the_image_runs_both_entry_points_on_a_read_only_root_as_the_non_root_user(image: str) -> None:
    started = time.monotonic()
    top = run(*HARDENED, image, "--help")
    _timed("feedwatch --help in a container", started)
    assert top.returncode == 0, top.stderr
    assert "watch" in top.stdout and "operator" in top.stdout
    watch = run(*HARDENED, image, "watch", "--help")
    assert watch.returncode == 0, watch.stderr
    assert "--handler" in watch.stdout
    operator = run(*HARDENED, image, "operator", "--help")
    assert operator.returncode == 0, operator.stderr
    assert "--namespace" in operator.stdout and "--watcher-image" in operator.stdout


def test_the_image_defaults_to_user_10001_with_home_in_tmp_and_cannot_write_its_root(image: str) -> None:
    probe = run(
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--entrypoint",
        "python3",
        image,
        "-c",
        "import os, pathlib\n"
        "print(os.getuid(), os.getgid(), os.environ['HOME'])\n"
        "pathlib.Path('/tmp/ok').write_text('x')\n"
        "try:\n    pathlib.Path('/opt/feedwatch/x').write_text('x')\n"
        "except OSError as e:\n    print(e.errno)\n",
    )
    assert probe.returncode == 0, probe.stderr
    uid, gid, home, errno = probe.stdout.split()
    assert (uid, gid, home) == ("10001", "10001", "/tmp")
    assert errno == "30", "the root filesystem is read-only (EROFS)"
    inspect = subprocess.run(
        ["podman", "image", "inspect", image, "--format", "{{json .Config.Entrypoint}} {{json .Config.Cmd}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert inspect.stdout.split() == ['["feedwatch"]', '["watch"]']


@pytest.fixture
def handler(tmp_path: Path) -> Iterator[Handler]:
    with Handler(tmp_path) as running:
        yield running


@pytest.fixture
def feed_on_mariadb() -> Iterator[tuple[str, Feed]]:
    url = database_url("mariadb", "sqlite://")  # migrated; fails (never skips) when MariaDB is down
    store = store_for(url)
    name = f"img{uuid.uuid4().hex[:10]}"
    yield url, Feed.create(store, name, backoff_base=0.05, backoff_cap=0.2, poll_delay=0.05)
    close_stores()


def test_feedwatch_watch_in_the_container_completes_a_fan_out_fan_in_workload_on_mariadb(
    image: str, handler: Handler, feed_on_mariadb: tuple[str, Feed], tmp_path: Path
) -> None:
    url, feed = feed_on_mariadb
    assert url == MARIADB_URL
    health_port = free_port()
    name = f"feedwatch-test-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "container.log"
    args = [
        "--env", f"FEEDWATCH_HEALTH_PORT={health_port}",
        image, "watch", "--db", url, "--feed", feed.name, "--handler", handler.url,
        "--lease-duration", "3", "--poll-interval", "0.2", "--grace-period", "5",
    ]  # fmt: skip
    started = time.monotonic()
    container = start_container(name, args, log)
    try:
        store = feed.store
        wait_until(
            lambda: len(store.live_watchers(feed.name, store.now())) == 1,
            timeout=90,
            message=lambda: f"the containerised watcher to heartbeat:\n{log.read_text()[-3000:]}",
        )
        _timed("container start to first heartbeat", started)
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=5) as answer:
            assert answer.status == 200
        workload = time.monotonic()
        parts = [f"p{n}" for n in range(PARTITIONS)]
        for part in parts:  # fan out: items per partition; fan in: each gate waits for the whole partition
            feed.enqueue(part, {f"i{n}": {"behave": "gates", "last": LAST_GATE} for n in range(ITEMS)})
        wait_until(
            lambda: all(feed.partition(p).status == "complete" for p in parts),
            timeout=120,
            message=lambda: f"every partition to complete:\n{log.read_text()[-3000:]}",
        )
        _timed(f"workload ({PARTITIONS} partitions x {ITEMS} items x {LAST_GATE + 1} gates)", workload)
        assert container.poll() is None, "the container exited during the run"
    finally:
        code = stop_container(container, name)
    assert code == 0, f"the watcher exited {code}:\n{log.read_text()[-3000:]}"

    calls = handler.records("call")
    assert {c["feed"] for c in calls} == {feed.name}
    for part in parts:
        rows = feed.items(part)
        assert len(rows) == ITEMS
        assert all((row.status, row.gate) == ("complete", LAST_GATE) for row in rows)
        for gate in range(1, LAST_GATE + 1):  # fan-in seen from the handler's side
            finished = max(r["t"] for r in handler.records("reply") if r["p"] == part and r["g"] == gate - 1)
            began = min(c["t"] for c in calls if c["p"] == part and c["g"] == gate)
            assert began > finished, f"{part}: gate {gate} started before gate {gate - 1} finished"
    owners = {row.owner for row in history(feed.store, feed.name, event="complete")}
    assert len(owners) == 1, f"one containerised watcher did the work: {owners}"


def test_feedwatch_operator_in_the_container_reconciles_a_feedwatcher(
    image: str, kube: KubeEnv, namespace: str, tmp_path: Path
) -> None:
    """The operator as the chart runs it: read-only root, user 10001, settings from variables."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "feedwatcher.yaml"))
    kube.kubectl("wait", "--for=condition=Established", "crd/feedwatchers.feedwatch.dev", "--timeout=60s")
    url = database_url("mariadb", "sqlite://")
    kube.kubectl("create", "secret", "generic", "feedwatch-db", "-n", namespace, f"--from-literal=url={url}")
    kubeconfig = tmp_path / "kubeconfig"
    shutil.copy(kube.kubeconfig, kubeconfig)
    kubeconfig.chmod(0o644)  # read by user 10001 through the bind mount
    health_port = free_port()
    name = f"feedwatch-operator-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "operator.log"
    args = [
        "--volume", f"{kubeconfig}:/etc/feedwatch/kubeconfig:ro",
        "--env", "KUBECONFIG=/etc/feedwatch/kubeconfig",
        "--env", f"FEEDWATCH_OPERATOR_HEALTH_PORT={health_port}",
        "--env", f"FEEDWATCH_OPERATOR_NAMESPACES={namespace}",
        "--env", f"FEEDWATCH_OPERATOR_WATCHER_IMAGE={image}",
        image, "operator",
    ]  # fmt: skip
    started = time.monotonic()
    container = start_container(name, args, log)
    try:
        fw = {
            "apiVersion": "feedwatch.dev/v1alpha1",
            "kind": "FeedWatcher",
            "metadata": {"name": "in-image", "namespace": namespace},
            "spec": {
                "database": {"urlSecretRef": {"name": "feedwatch-db"}},
                "handler": {"url": "http://127.0.0.1:9/"},
            },
        }
        kube.kubectl("apply", "-f", "-", input=json.dumps(fw))
        deployment = wait_until(
            lambda: json.loads(
                kube.kubectl("get", "deployment", "in-image", "-n", namespace, "-o", "json").stdout
            ),
            timeout=120,
            message=lambda: f"the watcher Deployment; operator log:\n{log.read_text()[-4000:]}",
        )
        _timed("operator container start to the watcher Deployment", started)
        (watcher,) = deployment["spec"]["template"]["spec"]["containers"]
        assert watcher["image"] == image, "the watcher image comes from FEEDWATCH_OPERATOR_WATCHER_IMAGE"
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=5) as answer:
            assert answer.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics", timeout=5) as answer:
            assert answer.status == 200
        assert container.poll() is None, log.read_text()[-4000:]
    finally:
        code = stop_container(container, name)
    assert code == 0, f"the operator exited {code}:\n{log.read_text()[-4000:]}"
