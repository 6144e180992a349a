"""Pure logic and repository layout: no database."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from feedwatch import ConfigurationError, FeedSettings, PermanentError, RetryableError, WatcherSettings
from feedwatch.engine import balancing, retrying
from feedwatch.processors.base import UNSET
from feedwatch.processors.contract import parse_reply
from feedwatch.settings import settings_table

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_operator_is_a_source_root_not_a_package() -> None:
    assert (ROOT / "operator" / "feedwatch" / "__init__.py").exists()
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_the_settings_doc_matches_the_settings_dataclasses() -> None:
    assert settings_table() in (ROOT / "docs" / "settings.md").read_text()


def test_backoff_stays_between_base_and_cap_and_grows() -> None:
    settings = FeedSettings(backoff_base=1, backoff_cap=60)
    rng = random.Random(1)
    delays = [retrying.backoff(n, settings, rng) for n in range(1, 12)]
    assert all(1 <= d <= 60 for d in delays)
    assert delays[0] == 1 and delays[-1] >= 30


def test_targets_and_victims_follow_the_change_feed_rule() -> None:
    assert balancing.target(10, 3, 100) == 4
    assert balancing.target(10, 3, 2) == 2
    assert balancing.victim({"a": 5, "b": 1, "me": 0}, "me", 3) == "a"
    assert balancing.victim({"a": 3, "me": 2}, "me", 3) is None


def test_the_contract_accepts_gofeed_spellings_with_done_and_data_winning() -> None:
    assert parse_reply({"complete": True, "response": {"x": 1}}).data == {"x": 1}
    both = parse_reply({"done": False, "complete": True, "data": 1, "response": 2, "gate": 3})
    assert (both.done, both.data, both.gate) == (False, 1, 3)
    assert parse_reply({"done": True}).data is UNSET
    assert parse_reply({"done": True, "data": None}).data is None


def test_the_contract_turns_errors_and_malformed_replies_into_processing_errors() -> None:
    with pytest.raises(PermanentError, match="bad"):
        parse_reply({"error": {"message": "bad", "no_retry": True}})
    with pytest.raises(RetryableError, match="neither done/complete nor error"):
        parse_reply({})
    with pytest.raises(RetryableError, match="gate must be an integer"):
        parse_reply({"done": False, "gate": "2"})


def test_invalid_settings_say_what_is_wrong() -> None:
    with pytest.raises(ConfigurationError, match="failure_policy must be 'block' or 'skip'"):
        FeedSettings(failure_policy="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="concurrency must be >= 1"):
        WatcherSettings(concurrency=0)
    with pytest.raises(ConfigurationError, match="renew_interval"):
        WatcherSettings(lease_duration=2, renew_interval=3)
