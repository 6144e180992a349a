"""Prometheus metrics of one watcher (a registry per watcher, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self, feed: str) -> None:
        self.registry = CollectorRegistry()
        labels = ["feed"]
        r = self.registry
        self._items = Counter(
            "feedwatch_items_total",
            "Item results committed, by outcome.",
            ["feed", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "feedwatch_processing_seconds",
            "Processor call latency.",
            labels,
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        ).labels(feed)
        self.leases = Gauge("feedwatch_leases_held", "Partitions leased now.", labels, registry=r).labels(
            feed
        )
        self.gate_advances = Counter(
            "feedwatch_gate_advances_total", "Gates advanced.", labels, registry=r
        ).labels(feed)
        self.partitions_closed = Counter(
            "feedwatch_partitions_closed_total",
            "Partitions closed, by status.",
            ["feed", "status"],
            registry=r,
        )
        self.steals = Counter(
            "feedwatch_steals_total", "Partitions received by hand-off steals.", labels, registry=r
        ).labels(feed)
        self.lost_races = Counter(
            "feedwatch_lost_races_total",
            "Writes discarded because another writer won.",
            labels,
            registry=r,
        ).labels(feed)
        # The autoscaler's view of the feed (Store.feed_backlog), refreshed every few seconds.
        self.backlog = Gauge(
            "feedwatch_backlog_items",
            "Due items at their partition's gate in the feed (capped count).",
            labels,
            registry=r,
        ).labels(feed)
        self.backlog_partitions = Gauge(
            "feedwatch_backlog_partitions",
            "Available partitions with work due, leased or not (capped count).",
            labels,
            registry=r,
        ).labels(feed)
        self.backlog_oldest = Gauge(
            "feedwatch_backlog_oldest_item_age_seconds",
            "Age of the oldest due item of the feed.",
            labels,
            registry=r,
        ).labels(feed)
        self.active_partitions = Gauge(
            "feedwatch_active_partitions",
            "Partitions with work due (capped count).",
            labels,
            registry=r,
        ).labels(feed)
        self.in_flight = Gauge(
            "feedwatch_in_flight", "Processor calls in flight.", labels, registry=r
        ).labels(feed)
        self.feed = feed

    def item(self, outcome: str, count: int = 1) -> None:
        """Count committed results: complete, gate, poll, retry, delay, fail."""
        self._items.labels(self.feed, outcome).inc(count)

    def closed(self, status: str) -> None:
        self.partitions_closed.labels(self.feed, status).inc()

    def observe_backlog(self, partitions: int, items: int, oldest_age: float) -> None:
        """Set the backlog gauges from one backlog read."""
        self.backlog_partitions.set(partitions)
        self.backlog.set(items)
        self.backlog_oldest.set(oldest_age)

    def render(self) -> bytes:
        return generate_latest(self.registry)
