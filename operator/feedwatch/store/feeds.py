"""Feeds: creating a feed, changing its settings, reading them back.

A feed row holds the settings every watcher and producer of that feed reads
(:class:`~feedwatch.settings.FeedSettings`); its version moves on each change,
so a watcher can tell that its copy is stale.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from feedwatch.errors import FeedNotFoundError
from feedwatch.settings import DELAY_SETTINGS, MAX_DELAY, FeedSettings
from feedwatch.store.base import StoreBase

_FEED_FIELDS = [f.name for f in dataclasses.fields(FeedSettings)]


class FeedQueries(StoreBase):
    """The feeds table: one row of settings per feed."""

    def save_feed(self, name: str, settings: FeedSettings, *, now: datetime, create_only: bool) -> bool:
        """Create the feed, or update its settings; return True if it was created."""
        f = self.tables.feeds
        values = {k: getattr(settings, k) for k in _FEED_FIELDS}

        def work(conn: Connection) -> bool:
            exists = conn.execute(select(f.c.version).where(f.c.name == name)).first()
            if exists is None:
                conn.execute(insert(f).values(name=name, version=1, created_at=now, updated_at=now, **values))
                return True
            if not create_only:
                conn.execute(
                    update(f)
                    .where(f.c.name == name)
                    .values(version=f.c.version + 1, updated_at=now, **values)
                )
            return False

        try:
            return self.transaction(work)
        except IntegrityError:
            return False  # created concurrently by another producer

    def load_feed(self, name: str) -> FeedSettings:
        f = self.tables.feeds
        row = self.transaction(lambda c: c.execute(select(f).where(f.c.name == name)).first(), readonly=True)
        if row is None:
            raise FeedNotFoundError(
                f"feed {name!r} does not exist: create it with `feedwatch feed create {name}` "
                "or Feed.create()"
            )
        return stored_settings({k: row._mapping[k] for k in _FEED_FIELDS})

    def feed_names(self) -> list[str]:
        f = self.tables.feeds
        return self.transaction(
            lambda c: [r[0] for r in c.execute(select(f.c.name).order_by(f.c.name))], readonly=True
        )


def stored_settings(values: dict[str, Any]) -> FeedSettings:
    """A feed row's settings, read as the engine used them before delays were bounded.

    Older versions stored any delay (PostgreSQL even NaN); the engine cut each
    to a week, and ignored NaN. A row must always load, or its watchers stop:
    a delay over a week reads as a week, a NaN one as the default.
    """
    defaults = FeedSettings()
    for delay in DELAY_SETTINGS:
        value = values[delay]
        values[delay] = getattr(defaults, delay) if math.isnan(value) else min(value, MAX_DELAY)
    values["backoff_cap"] = max(values["backoff_cap"], values["backoff_base"])
    return FeedSettings(**values)
