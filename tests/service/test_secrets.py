"""Secrets stay secret: a database password and a handler `Authorization` header.

A MariaDB user with a distinctive password runs a watcher and the CLI; the
handler gets an `Authorization` header through FEEDWATCH_HANDLER_HEADERS.
Neither secret may appear in anything printed (stdout, stderr, logs at DEBUG),
in /metrics or /readyz, in `status` output, nor in the watch process's
/proc/<pid>/cmdline (the CLI sets the process title with setproctitle).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from feedwatch.testing import wait_for
from tests.conftest import MARIADB_URL
from tests.service.helpers import (
    MARIADB_ROOT_URL,
    answers,
    cli,
    cli_parallel,
    http_get,
    log_text,
    start_watch,
    stop_all,
    store_for,
)
from tests.support.handler import Handler
from tests.support.ports import free_port

pytestmark = pytest.mark.service


@pytest.fixture
def secret_db() -> Iterator[tuple[str, str]]:
    """A MariaDB user with a distinctive password, on the tests' database: (url, password)."""
    user = f"fwsec_{uuid.uuid4().hex[:8]}"
    password = f"Zebra-{uuid.uuid4().hex[:12]}-Pw"
    database = make_url(MARIADB_URL).database
    root = create_engine(MARIADB_ROOT_URL)
    try:
        with root.begin() as conn:
            conn.execute(text(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'"))
            conn.execute(text(f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'127.0.0.1'"))
        url = make_url(MARIADB_URL).set(username=user, password=password)
        yield url.render_as_string(hide_password=False), password
    finally:
        with root.begin() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'"))
        root.dispose()


@pytest.mark.slow
def test_db_password_and_handler_authorization_never_show(
    secret_db: tuple[str, str], handler: Handler, tmp_path: Path
) -> None:
    url, password = secret_db
    token = f"tok-{uuid.uuid4().hex}-Secret"
    authorization = f"Bearer {token}"
    secrets = (password, token)
    env = {"FEEDWATCH_HANDLER_HEADERS": f"Authorization: {authorization}"}
    feed = f"sec{uuid.uuid4().hex[:8]}"
    shown: list[tuple[str, str]] = []  # (what, text) of everything printed or served

    def run(*args: str, code: int = 0) -> str:
        result = cli(*args, env=env)
        shown.append((f"feedwatch {args[0]} stdout", result.stdout))
        shown.append((f"feedwatch {args[0]} stderr", result.stderr))
        assert result.returncode == code, f"{args[0]} exited {result.returncode}: {result.stderr}"
        return result.stdout

    run("migrate", "--db", url)
    run(
        "feed",
        "create",
        "--db",
        url,
        feed,
        "--feed-max-retries",
        "1",
        "--feed-backoff-base",
        "0.05",
        "--feed-backoff-cap",
        "0.1",
    )
    run(
        "enqueue",
        "--db",
        url,
        "--feed",
        feed,
        "p1",
        '{"id": "ok", "data": {"behave": "ok"}}',
        '{"id": "flaky", "data": {"behave": "500_then_ok"}}',
        '{"id": "gates", "data": {"behave": "gates", "last": 1}}',
    )
    run(
        "enqueue",
        "--db",
        url,
        "--feed",
        feed,
        "p2",
        '{"id": "bad", "data": {"behave": "no_retry"}}',
    )

    port = free_port()
    log = tmp_path / "watch.log"
    watcher = start_watch(
        url,
        feed,
        log,
        handler=handler.url,
        env=env,
        args=[
            "--health-port",
            str(port),
            "--log-level",
            "DEBUG",
            "--handler-health-path",
            "/healthz",
        ],
    )
    base = f"http://127.0.0.1:{port}"
    store = store_for(url)
    try:
        cmdline = Path(f"/proc/{watcher.pid}/cmdline")
        title = wait_for(
            lambda: (
                (t := cmdline.read_bytes().replace(b"\0", b" ").decode().strip()).startswith(
                    "feedwatch watch"
                )
                and t
            ),
            timeout=60,
            message=lambda: "the watcher to set its process title: " + log_text(log)[-2000:],
        )
        assert title == f"feedwatch watch --feed {feed}"
        shown.append(("/proc/<pid>/cmdline", title))
        wait_for(
            lambda: {p.status for p in store.partitions(feed)} == {"complete", "failed"},
            timeout=60,
            message=lambda: "the run to end: " + log_text(log)[-2000:],
        )
        wait_for(lambda: answers(base + "/readyz"), timeout=30, message="/readyz")
        for path in ("/metrics", "/readyz", "/healthz"):
            status, body = http_get(base + path)
            assert status == 200, (path, body)
            shown.append((path, body))
        assert f'feedwatch_items_total{{feed="{feed}",outcome="complete"}} 3.0' in shown[-3][1]
        unreachable = make_url(url).set(port=9).render_as_string(hide_password=False)
        checks = [  # (expected exit code, args): reads, and errors that name the database
            (0, ["status", "--db", url, "--feed", feed]),
            (0, ["status", "--db", url, "--feed", feed, "--output", "json"]),
            (0, ["items", "--db", url, "--feed", feed, "p1", "-o", "json"]),
            (0, ["items", "--db", url, "--feed", feed, "p2"]),
            (0, ["feed", "show", "--db", url, feed]),
            (0, ["feed", "list", "--db", url]),
            (1, ["status", "--db", unreachable, "--feed", feed]),
            (2, ["status", "--db", url.replace("mysql+pymysql", "mysql+mysqldb")]),
            (2, ["status", "--db", url, "--feed", "nope"]),
        ]
        for (code, args), result in zip(checks, cli_parallel([a for _, a in checks], env), strict=True):
            shown.append((" ".join(args[:2]), result.stdout + result.stderr))
            assert result.returncode == code, (args, result.stderr)
        assert "complete" in shown[-9][1]
        assert "cannot reach the database at mysql+pymysql://" in shown[-3][1]
        run("retry", "--db", url, "--feed", feed, "--all")
        bad_headers = cli(
            "watch",
            "--db",
            url,
            "--feed",
            feed,
            "--handler",
            handler.url,
            "--health-port",
            "0",
            env={"FEEDWATCH_HANDLER_HEADERS": f"Authorization {authorization}"},
        )
        shown.append(("watch with a malformed header", bad_headers.stdout + bad_headers.stderr))
        assert bad_headers.returncode == 2
        assert "handler_headers" in bad_headers.stderr
        assert watcher.poll() is None
    finally:
        codes = stop_all(watcher)
    shown.append(("watcher log", log_text(log)))
    assert codes == [0], log_text(log)[-3000:]
    assert "DEBUG" in log_text(log)

    # The secrets did their job: the handler got the header, the database the password.
    digest = hashlib.sha256(authorization.encode()).hexdigest()
    assert {c["auth_sha256"] for c in handler.calls()} == {digest}
    assert store.partition(feed, "p1").status == "complete"
    leaks = [(what, secret) for what, body in shown for secret in secrets if secret in body]
    assert not leaks, f"secrets shown in: {[what for what, _ in leaks]}"
    printed = "".join(body for _, body in shown)
    assert "***" in printed  # the database URL is shown, redacted
