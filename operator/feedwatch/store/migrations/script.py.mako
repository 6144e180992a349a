"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}


def upgrade(prefix: str = "") -> None:
    ${upgrades if upgrades else "pass"}


def downgrade(prefix: str = "") -> None:
    ${downgrades if downgrades else "pass"}
