"""The initial schema: feeds, partitions, items, heartbeats, history.

Revision ID: 0001
Revises:
"""

from alembic import op

from feedwatch.store import schema

revision = "0001"
down_revision = None


def upgrade(prefix: str = "") -> None:
    # Revision 0001 is the schema of schema.py as first released. The next
    # schema change must freeze this revision's tables here before editing
    # schema.py, and add a revision of its own.
    schema.build(prefix).metadata.create_all(op.get_bind())


def downgrade(prefix: str = "") -> None:
    schema.build(prefix).metadata.drop_all(op.get_bind())
