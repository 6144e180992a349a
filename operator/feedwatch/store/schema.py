"""The tables, as SQLAlchemy Core metadata.

The schema is a stable read interface: users may query it with SQL (see
``docs/schema.md``). Every table name carries an optional prefix, gofeed's
way to isolate several deployments in one database.

Timestamps are UTC, millisecond precision or better on every database
(``DATETIME(6)`` on MariaDB, ``TIMESTAMP(6)`` on PostgreSQL, ISO text on SQLite).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql, postgresql

from feedwatch.errors import ConfigurationError

# BIGINT autoincrement is not a rowid alias on SQLite; INTEGER is.
Id = BigInteger().with_variant(Integer(), "sqlite")
Timestamp = (
    DateTime()
    .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    .with_variant(postgresql.TIMESTAMP(precision=6), "postgresql")
)
Blob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

STATUSES = ("available", "complete", "failed")


#: The largest gate: the gate columns are signed 32-bit ``INTEGER`` on every database.
MAX_GATE = 2**31 - 1


@dataclass(frozen=True)
class Tables:
    """The tables of one prefix."""

    metadata: MetaData
    feeds: Table
    partitions: Table
    items: Table
    heartbeats: Table
    history: Table
    prefix: str


#: A table prefix: written into SQL as part of every table name, so only
#: characters that need no quoting on any database (the FeedWatcher CRD's rule).
PREFIX = re.compile(r"[a-z][a-z0-9_]{0,29}")


def check_prefix(prefix: str) -> str:
    """``prefix`` if it is a usable table prefix; a :class:`ConfigurationError` saying why if not."""
    if prefix and not PREFIX.fullmatch(prefix):
        raise ConfigurationError(
            f"table prefix {prefix!r} is not usable: it must be empty or 1 to 30 characters of "
            "lowercase letters, digits and underscores starting with a letter (e.g. 'team_a_'), "
            "because it becomes part of every table name"
        )
    return prefix


def build(prefix: str = "") -> Tables:
    """The tables named with ``prefix``; migrations and queries share them."""
    check_prefix(prefix)
    md = MetaData()
    p = prefix
    feeds = Table(
        f"{p}feeds",
        md,
        Column("name", String(200), primary_key=True),
        Column("auto_close", Boolean, nullable=False),
        Column("manual_checkpoint", Boolean, nullable=False),
        Column("max_retries", Integer, nullable=False),
        Column("backoff_base", Float, nullable=False),
        Column("backoff_cap", Float, nullable=False),
        Column("failure_policy", String(16), nullable=False),
        Column("poll_delay", Float, nullable=False),
        Column("poll_limit", Integer, nullable=False),
        Column("max_unanswered", Integer, nullable=False),
        Column("max_item_bytes", BigInteger, nullable=False),
        Column("history", Boolean, nullable=False),
        Column("paused", Boolean, nullable=False),
        Column("version", Integer, nullable=False),
        Column("created_at", Timestamp, nullable=False),
        Column("updated_at", Timestamp, nullable=False),
    )
    partitions = Table(
        f"{p}partitions",
        md,
        Column("pk", Id, primary_key=True, autoincrement=True),
        Column("feed", String(200), nullable=False),
        Column("id", String(200), nullable=False),
        Column("status", String(16), nullable=False),
        Column("gate", Integer, nullable=False),
        Column("version", Integer, nullable=False),
        # When work is next due; NULL = idle (nothing to do until a producer writes).
        Column("ready_at", Timestamp, nullable=True),
        Column("owner", String(100), nullable=True),
        Column("lease_until", Timestamp, nullable=True),
        Column("lease_epoch", Integer, nullable=False),
        Column("steal_by", String(100), nullable=True),
        Column("token", String(32), nullable=True),
        Column("error", Text, nullable=True),
        Column("created_at", Timestamp, nullable=False),
        Column("updated_at", Timestamp, nullable=False),
        UniqueConstraint("feed", "id", name=f"{p}uq_partitions_feed_id"),
        Index(f"{p}ix_partitions_ready", "feed", "status", "ready_at"),
        Index(f"{p}ix_partitions_owner", "feed", "owner"),
    )
    items = Table(
        f"{p}items",
        md,
        Column("pk", Id, primary_key=True, autoincrement=True),
        Column("partition_pk", Id, nullable=False),
        Column("id", String(200), nullable=False),
        Column("status", String(16), nullable=False),
        Column("gate", Integer, nullable=False),
        Column("version", Integer, nullable=False),
        Column("data", Blob, nullable=True),
        Column("content_type", String(200), nullable=False),
        Column("input_hash", String(64), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("failures", Integer, nullable=False),
        Column("polls", Integer, nullable=False),
        Column("unanswered", Integer, nullable=False),
        # The lease epoch of the partition under which it was last dispatched.
        Column("claim_epoch", Integer, nullable=True),
        # Written by every engine write; read back to learn exactly which rows it won.
        Column("token", String(32), nullable=True),
        Column("next_attempt_at", Timestamp, nullable=False),
        Column("error", Text, nullable=True),
        Column("created_at", Timestamp, nullable=False),
        Column("updated_at", Timestamp, nullable=False),
        UniqueConstraint("partition_pk", "id", name=f"{p}uq_items_partition_id"),
        Index(f"{p}ix_items_due", "partition_pk", "status", "gate", "pk"),
    )
    heartbeats = Table(
        f"{p}heartbeats",
        md,
        Column("feed", String(200), primary_key=True),
        Column("owner", String(100), primary_key=True),
        Column("host", String(200), nullable=False),
        Column("started_at", Timestamp, nullable=False),
        Column("expires_at", Timestamp, nullable=False),
    )
    history = Table(
        f"{p}history",
        md,
        Column("pk", Id, primary_key=True, autoincrement=True),
        Column("feed", String(200), nullable=False),
        Column("partition_pk", Id, nullable=False),
        Column("item_pk", Id, nullable=True),
        Column("event", String(32), nullable=False),
        Column("from_version", Integer, nullable=False),
        Column("from_status", String(16), nullable=True),
        Column("to_status", String(16), nullable=False),
        Column("gate", Integer, nullable=False),
        Column("attempt", Integer, nullable=True),
        Column("owner", String(100), nullable=True),
        Column("message", Text, nullable=True),
        Column("at", Timestamp, nullable=False),
        Index(f"{p}ix_history_partition", "partition_pk", "pk"),
        Index(f"{p}ix_history_at", "feed", "at"),
    )
    return Tables(md, feeds, partitions, items, heartbeats, history, prefix)
