"""Feed settings are refused when their columns could not store them, with the setting named.

The feeds table keeps counts in 32-bit integers and delays in floats; a value
past either (or NaN, infinity, ``True`` for 1) used to reach the database and
come back as the driver's error. Delays are bounded by the week every delay is
cut to anyway (``MAX_DELAY``), the same bound as the FeedWatcher CRD's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from feedwatch.errors import ConfigurationError
from feedwatch.settings import MAX_COUNT, MAX_DELAY, FeedSettings
from feedwatch.store.feeds import stored_settings

BAD: list[tuple[dict[str, Any], str]] = [
    ({"backoff_cap": float("inf")}, r"backoff_cap must be a number of seconds from 0 to 604800 \(7 days\), not inf"),  # noqa: E501
    ({"poll_delay": float("nan")}, r"poll_delay must be a number .* not nan"),
    ({"backoff_base": 1e300, "backoff_cap": 1e300}, r"backoff_base must be .* not 1e\+300"),
    ({"backoff_cap": MAX_DELAY + 1}, r"backoff_cap must be a number of seconds from 0 to 604800"),
    ({"poll_delay": "1"}, r"poll_delay must be a number .* not '1'"),
    ({"poll_delay": True}, r"poll_delay must be a number .* not True"),
    ({"max_retries": 2**31}, rf"max_retries must be an integer of at most {MAX_COUNT}, not 2147483648"),
    ({"poll_limit": 2**40}, r"poll_limit must be an integer of at most"),
    ({"max_unanswered": True}, r"max_unanswered must be an integer .* not True"),
    ({"max_retries": 3.0}, r"max_retries must be an integer .* not 3.0"),
    ({"max_item_bytes": 2**63}, r"max_item_bytes must be an integer of at most 9223372036854775807"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "message"), BAD, ids=[str(c) for c, _ in BAD])
def test_a_value_its_column_cannot_store_is_refused_with_the_setting_named(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=r"^invalid feed settings: .*" + message):
        FeedSettings(**changes)


def test_the_largest_values_are_accepted() -> None:
    top = FeedSettings(
        backoff_base=MAX_DELAY,
        backoff_cap=MAX_DELAY,
        poll_delay=MAX_DELAY,
        max_retries=MAX_COUNT,
        poll_limit=MAX_COUNT,
        max_unanswered=MAX_COUNT,
        max_item_bytes=2**63 - 1,
    )
    assert (top.backoff_cap, top.max_retries) == (MAX_DELAY, MAX_COUNT)
    assert FeedSettings(backoff_base=2, backoff_cap=60, poll_delay=0).backoff_base == 2, "ints are numbers"


def test_a_stored_row_always_loads_as_the_engine_used_it() -> None:
    """Older versions stored delays past a week (and, on PostgreSQL, NaN): such rows still load."""
    row = dataclasses.asdict(FeedSettings())
    huge = stored_settings({**row, "backoff_base": 1e30, "backoff_cap": float("inf"), "poll_delay": 1e9})
    assert (huge.backoff_base, huge.backoff_cap, huge.poll_delay) == (MAX_DELAY, MAX_DELAY, MAX_DELAY)
    nan = stored_settings(
        {**row, "backoff_base": float("nan"), "backoff_cap": 0.5, "poll_delay": float("nan")}
    )
    assert (nan.backoff_base, nan.backoff_cap, nan.poll_delay) == (1.0, 1.0, 1.0), "defaults; cap >= base"
    assert stored_settings({**row, "backoff_cap": 60.0}).backoff_cap == 60.0, "a usable row is read as it is"
