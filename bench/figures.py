"""Figures: a measured value per repeat, its median and spread, and its target."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Target:
    op: str  # ">=", "<=", ">" or "<"
    value: float
    text: str = ""

    def met(self, measured: float) -> bool:
        return {
            ">=": measured >= self.value,
            "<=": measured <= self.value,
            ">": measured > self.value,
            "<": measured < self.value,
        }[self.op]

    def __str__(self) -> str:
        return self.text or f"{self.op} {fmt(self.value)}"


@dataclass
class Figure:
    scenario: str
    database: str
    variant: str
    metric: str
    unit: str
    values: list[float] = field(default_factory=list)
    target: Target | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def spread(self) -> str:
        if len(self.values) < 2:
            return ""
        return f"{fmt(min(self.values))}-{fmt(max(self.values))}"

    @property
    def verdict(self) -> str:
        if self.target is None or not self.values:
            return ""
        return "met" if self.target.met(self.median) else "MISSED"

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "database": self.database,
            "variant": self.variant,
            "metric": self.metric,
            "unit": self.unit,
            "values": self.values,
            "median": self.median,
            "target": str(self.target) if self.target else None,
            "verdict": self.verdict,
            "note": self.note,
        }


def fmt(value: float) -> str:
    """Three significant figures, thousands separated; ``n/a`` for NaN."""
    if math.isnan(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1), nearest rank: p99 of 100 values is the 99th."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1]
