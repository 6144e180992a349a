#!/usr/bin/env python3
"""feedwatch as a library: a Feed to enqueue and read back, a Watcher with your own processor.

    python examples/library_usage.py                 # a temporary SQLite database
    python examples/library_usage.py --db mysql+pymysql://user:pass@host/db

The work: orders. Each order is a partition; its lines are items at gate 0
(price each line; one line's price service is flaky and fails once with a
retryable error), and one ``invoice`` item at gate 1 that runs after every
line is priced and reads their results back through the Feed (fan-in).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from feedwatch import (
    Feed,
    Item,
    PermanentError,
    Result,
    RetryableError,
    Store,
    Watcher,
    WatcherSettings,
    migrate,
)

PRICES = {"apple": 0.5, "bread": 2.25, "coffee": 7.0, "tea": 4.5, "milk": 1.2}
ORDERS = {
    "order-1001": {"line-1": ("apple", 6), "line-2": ("bread", 1), "line-3": ("coffee", 2)},
    "order-1002": {"line-1": ("tea", 3), "line-2": ("milk", 2)},
}


class OrderProcessor:
    """A feedwatch Processor: ``async def process(item) -> Result``."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.calls = 0

    async def process(self, item: Item) -> Result:
        self.calls += 1
        data: Any = item.json()
        if item.id == "invoice":
            return await self.invoice(item)
        product, quantity = data["product"], data["quantity"]
        if product == "coffee" and item.attempt == 1:
            # Retried after the feed's backoff; the attempt number is counted for us.
            raise RetryableError("the coffee price service timed out")
        if product not in PRICES:
            raise PermanentError(f"no price for {product!r}")  # fails the item for good
        await asyncio.sleep(0.01)  # an I/O call would go here
        total = round(PRICES[product] * quantity, 2)
        return Result.complete({"product": product, "quantity": quantity, "total": total})

    async def invoice(self, item: Item) -> Result:
        """Gate 1: every line is complete; read their results back and sum them."""
        lines = await asyncio.to_thread(
            lambda: [
                r.data for r in self.feed.iter_items(item.partition, gate=0, status="complete")
            ]
        )
        totals = [decode(raw)["total"] for raw in lines]
        return Result.complete({"lines": len(totals), "amount": round(sum(totals), 2)})


def decode(raw: bytes | None) -> Any:
    """An item's data (its input, then its latest result) as JSON."""
    return json.loads(raw or b"null")


async def main(url: str) -> int:
    migrate(url)  # create or upgrade the schema (safe to run from many processes)
    store = Store.open(url)
    # Feed settings live in the database, so every watcher of the feed agrees on them.
    name = f"orders-{uuid.uuid4().hex[:8]}"
    feed = Feed.create(store, name, backoff_base=0.1, backoff_cap=0.5)
    for order, lines in ORDERS.items():
        feed.enqueue(order, {line: {"product": p, "quantity": q} for line, (p, q) in lines.items()})
        feed.enqueue(order, {"invoice": {"currency": "EUR"}}, gate=1)  # the fan-in step

    processor = OrderProcessor(feed)
    settings = WatcherSettings(poll_interval=0.2, health_port=0)
    async with Watcher(store, feed.name, processor, settings):
        for order in ORDERS:
            row = await asyncio.to_thread(feed.wait, order, timeout=60)
            invoice = feed.items(order, gate=1)[0]
            print(f"{order}: {row.status}, invoice {decode(invoice.data)}")
    history = feed.history("order-1001")  # the audit trail of every transition
    retried = [h for h in history if h.event == "retry"]
    print(f"feed {name}: {processor.calls} processor calls; order-1001 retried "
          f"{len(retried)} time(s): {retried[0].message if retried else '-'}")  # fmt: skip
    store.close()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    db = args.db or f"sqlite:///{Path(tempfile.mkdtemp(prefix='feedwatch-example-')) / 'orders.db'}"
    sys.exit(asyncio.run(main(db)))
