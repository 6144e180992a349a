"""Fixtures of the service suite: a real handler process, watcher logs on failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.helpers import close_stores
from tests.support.handler import Handler


@pytest.fixture(scope="session", autouse=True)
def _close_service_stores() -> Iterator[None]:
    yield
    close_stores()


@pytest.fixture
def handler(tmp_path: Path) -> Iterator[Handler]:
    """The HTTP handler process (tests/support/handler.py) on a free loopback port."""
    with Handler(tmp_path) as running:
        yield running
