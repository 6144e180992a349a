"""Prometheus metrics of the operator process (its own registry, served on /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconciles = Counter(
            "feedwatch_operator_reconciles_total",
            "Reconciles of FeedWatchers, by outcome (applied, unchanged, paused, degraded, gone, error).",
            ["outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "feedwatch_operator_reconcile_seconds",
            "Time one reconcile took, API calls and database work included.",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.writes = Counter(
            "feedwatch_operator_api_writes_total",
            "Writes to the API server by the operator's own code (deployment, status, event).",
            ["kind"],
            registry=r,
        )
        self.feedwatchers = Gauge(
            "feedwatch_operator_feedwatchers", "FeedWatchers the operator serves now.", registry=r
        )
        self.degraded = Gauge(
            "feedwatch_operator_degraded_feedwatchers",
            "FeedWatchers whose Degraded condition is True, by reason.",
            ["reason"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
