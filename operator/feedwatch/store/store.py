"""The :class:`Store`: every query feedwatch runs, grouped by concern."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from feedwatch.store.backlog import BacklogQueries
from feedwatch.store.connection import connect
from feedwatch.store.enqueueing import EnqueueQueries
from feedwatch.store.feeds import FeedQueries
from feedwatch.store.leases import LeaseQueries
from feedwatch.store.migrating import check_schema
from feedwatch.store.processing import ProcessingQueries
from feedwatch.store.reading import ReadingQueries
from feedwatch.store.schema import check_prefix
from feedwatch.store.steering import SteeringQueries


class Store(
    FeedQueries,
    EnqueueQueries,
    LeaseQueries,
    ProcessingQueries,
    ReadingQueries,
    SteeringQueries,
    BacklogQueries,
):
    """All SQL of feedwatch, behind methods named by intent."""

    @classmethod
    def open(cls, url: str, *, prefix: str = "", pool_size: int = 5, check: bool = True) -> Store:
        """Connect to ``url`` and check that its schema is the one this code knows."""
        check_prefix(prefix)
        engine = connect(url, pool_size=pool_size)
        if check:
            try:
                check_schema(engine, prefix=prefix)
            except BaseException:
                engine.dispose()
                raise
        return cls(engine, prefix=prefix)

    @classmethod
    def from_engine(cls, engine: Engine, *, prefix: str = "") -> Store:
        return cls(engine, prefix=prefix)

    def close(self) -> None:
        self.engine.dispose()
