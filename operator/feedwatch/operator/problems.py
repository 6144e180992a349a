"""What can be wrong with a FeedWatcher: the ``Degraded`` reasons, and which of them are retried.

A :class:`Problem` is what the reconciler found; ``status.py`` turns it into
conditions and ``kube.py`` into one Warning Event. Problems of the spec or of
an object in the way are judged again only when something changes (the
FeedWatcher, its Secrets, the object in the way); transient ones are retried
by the background loop (Secrets at the next Secret check, the database with
backoff). The reasons are a fixed table (docs/operator.md, "Status and conditions").
"""

from __future__ import annotations

from dataclasses import dataclass

SECRET_NOT_FOUND = "SecretNotFound"  # noqa: S105 - a reason, not a password
SECRET_KEY_NOT_FOUND = "SecretKeyNotFound"  # noqa: S105 - a reason
INVALID_DATABASE_URL = "InvalidDatabaseURL"
DATABASE_UNREACHABLE = "DatabaseUnreachable"
SCHEMA_MISMATCH = "SchemaMismatch"
UNSUPPORTED_DATABASE = "UnsupportedDatabase"
FEED_CONFLICT = "FeedConflict"
DEPLOYMENT_CONFLICT = "DeploymentConflict"
INVALID_SPEC = "InvalidSpec"

#: Reasons retried by the background loop; the others wait for a change.
TRANSIENT = frozenset({SECRET_NOT_FOUND, SECRET_KEY_NOT_FOUND, DATABASE_UNREACHABLE})
#: Reasons that keep the Deployment from being created or changed (the last good one stays).
BLOCKING = frozenset(
    {
        SECRET_NOT_FOUND,
        SECRET_KEY_NOT_FOUND,
        INVALID_DATABASE_URL,
        SCHEMA_MISMATCH,
        UNSUPPORTED_DATABASE,
        FEED_CONFLICT,
        DEPLOYMENT_CONFLICT,
        INVALID_SPEC,
    }
)


@dataclass(frozen=True)
class Problem:
    """One reason from the table and a message that names what is wrong and how to fix it."""

    reason: str
    message: str

    @property
    def blocks_deployment(self) -> bool:
        return self.reason in BLOCKING


class ProblemError(Exception):
    """Raised by the layers below the reconciler to report a :class:`Problem`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.problem = Problem(reason, message)
