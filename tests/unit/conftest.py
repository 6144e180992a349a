"""Unit tests are pure logic: each gets a short timeout, so a hang fails in seconds, not after 300."""

from __future__ import annotations

import pytest

#: Seconds a unit test may take (pyproject.toml's ``timeout`` of 300 s is for the tiers with
#: databases and processes). A test that needs longer says so with its own ``timeout`` marker.
UNIT_TIMEOUT = 10


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A conftest's hook sees every collected item, not only this folder's: select by the marker.
    for item in items:
        if item.get_closest_marker("unit") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT))
