"""Shared bits of the engine tests."""

from __future__ import annotations

from feedwatch import Feed, WatcherSettings

FAST = WatcherSettings(
    lease_duration=2, poll_interval=0.1, health_port=0, concurrency=32, batch_size=100, grace_period=2
)


def all_closed(feed: Feed) -> bool:
    parts = feed.partitions()
    return bool(parts) and all(p.status in ("complete", "failed") for p in parts)


def statuses(feed: Feed) -> dict[str, str]:
    return {p.id: p.status for p in feed.partitions()}
