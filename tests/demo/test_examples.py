"""The examples under examples/ run, and the handler example keeps the handler contract."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feedwatch.demo import screening
from tests.demo.support import EXAMPLES, clean_env

pytestmark = pytest.mark.demo


def test_the_library_example_runs_a_watcher_with_its_own_processor(db_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "library_usage.py"), "--db", db_url],
        capture_output=True, text=True, timeout=120, env=clean_env(), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "order-1001: complete, invoice {'lines': 3, 'amount': 19.25}" in proc.stdout
    assert "order-1002: complete, invoice {'lines': 2, 'amount': 15.9}" in proc.stdout
    assert re.search(r"order-1001 retried 1 time\(s\): the coffee price service timed out", proc.stdout)


def test_the_library_example_runs_on_a_temporary_database_by_default() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "library_usage.py")],
        capture_output=True, text=True, timeout=120, env=clean_env(), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "order-1002: complete" in proc.stdout


@pytest.fixture
def bare_handler(tmp_path: Path) -> Iterator[str]:
    """The example handler without --db."""
    log = tmp_path / "handler.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "resume_handler.py"), "--port", "0"],
            stdout=out, stderr=subprocess.STDOUT, env=clean_env(),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"listening on (http://\S+)", log.read_text())):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield match.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, "the handler exits cleanly on SIGTERM"


def _post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 - the handler's http:// URL
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return response.status, json.loads(response.read())


def _headers(item: str, gate: int) -> dict[str, str]:
    return {
        "X-Feed-Name": "resumes", "X-Feed-Partition": "data-engineer", "X-Feed-Item": item,
        "X-Feed-Gate": str(gate), "X-Feed-Attempt": "1",
    }  # fmt: skip


def test_the_example_handler_answers_the_handler_contract(bare_handler: str) -> None:
    posting = screening.postings(2)[1]
    resumes = screening.generate(posting, 30, seed=7, with_poison=True)
    poison = next(i for i, d in resumes.items() if "twelve years" in d["resume"])
    plain = next(i for i in resumes if i != poison)

    status, reply = _post(bare_handler, resumes[plain], _headers(plain, 0))
    assert status == 200
    assert reply["done"] is True
    assert reply["data"] == screening.classify(resumes[plain], "v1")

    _, reply = _post(bare_handler, resumes[poison], _headers(poison, 0))
    assert reply["error"]["no_retry"] is True
    assert "classifier v1 cannot read the experience line" in reply["error"]["message"]

    _, health = _post(bare_handler + "deploy", {"classifier": "v2"})
    assert health["classifier"] == "v2"
    _, reply = _post(bare_handler, resumes[poison], _headers(poison, 0))
    assert reply["done"] is True
    assert reply["data"]["years"] == 12

    _, reply = _post(bare_handler, screening.rank_item(posting)["rank"], _headers("rank", 1))
    assert reply["error"]["no_retry"] is True
    assert "without --db" in reply["error"]["message"]

    with urllib.request.urlopen(bare_handler + "healthz", timeout=10) as response:  # noqa: S310
        assert json.loads(response.read()) == {"ok": True, "classifier": "v2", "database": None}
