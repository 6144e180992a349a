"""The demo's processor: classifies resumes at gate 0 and ranks each posting at gate 1.

Watcher processes load it with ``feedwatch watch --processor
feedwatch.demo:DemoProcessor``; it then reads ``FEEDWATCH_DEMO_CLASSIFIER``
(``v1`` or ``v2``) and, for the rank step, ``FEEDWATCH_DATABASE_URL`` and
``FEEDWATCH_TABLE_PREFIX``. The in-process demo passes them as arguments.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading

from feedwatch.demo import screening
from feedwatch.errors import ConfigurationError
from feedwatch.processors.base import Item, Result
from feedwatch.producer import Feed
from feedwatch.store import Store

#: The classifier's random delay, in seconds: small, so that work interleaves
#: across postings without hiding the engine's throughput.
DELAY = (0.001, 0.004)


class DemoProcessor:
    """Resumes -> ``classify`` (complete at gate 0); the ``rank`` item -> the top 10 (gate 1)."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        classifier: str | None = None,
        delay: tuple[float, float] = DELAY,
    ) -> None:
        self.classifier = classifier or os.environ.get("FEEDWATCH_DEMO_CLASSIFIER", "v1")
        if self.classifier not in screening.CLASSIFIERS:
            raise ConfigurationError(
                f"FEEDWATCH_DEMO_CLASSIFIER must be one of {', '.join(screening.CLASSIFIERS)}, "
                f"not {self.classifier!r}"
            )
        self.delay = delay
        self._store = store
        self._feeds: dict[str, Feed] = {}
        self._lock = threading.Lock()
        self._random = random.Random()  # noqa: S311 - a jitter, not a secret

    async def process(self, item: Item) -> Result:
        if item.id == screening.RANK_ITEM:
            return await self.rank(item)
        await asyncio.sleep(self._random.uniform(*self.delay))
        # Read the version once: a fix deployed meanwhile applies to the next item.
        return Result.complete(screening.classify(item.json(), self.classifier))

    async def rank(self, item: Item) -> Result:
        """The fan-in: read every resume's result back through the producer API, keep the top 10."""
        data = item.json() or {}
        top = int(data.get("top", screening.TOP))
        results = await asyncio.to_thread(read_results, self._feed(item.feed), item.partition)
        return Result.complete(screening.rank(data.get("posting"), results, top))

    def _feed(self, name: str) -> Feed:
        with self._lock:
            if name not in self._feeds:
                if self._store is None:
                    url = os.environ.get("FEEDWATCH_DATABASE_URL")
                    if not url:
                        raise ConfigurationError(
                            "the demo's rank step reads results back from the database: "
                            "set FEEDWATCH_DATABASE_URL"
                        )
                    prefix = os.environ.get("FEEDWATCH_TABLE_PREFIX", "")
                    self._store = Store.open(url, prefix=prefix)
                self._feeds[name] = Feed(self._store, name)
            return self._feeds[name]


def read_results(feed: Feed, partition: str) -> list[tuple[str, str, object]]:
    """``(item id, status, result)`` of every resume of a posting (its gate-0 items)."""
    return [(row.id, row.status, _json(row.data)) for row in feed.iter_items(partition, gate=0)]


def _json(data: bytes | None) -> object:
    return None if data is None else json.loads(data)
