"""The exception tree of feedwatch.

Every error feedwatch raises on purpose derives from :class:`FeedwatchError`,
so a user can catch them all at once. A class docstring is its default message.
"""

from __future__ import annotations


class FeedwatchError(Exception):
    """feedwatch failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(FeedwatchError):
    """A setting has a value feedwatch cannot use."""


class DatabaseURLError(ConfigurationError):
    """The database URL is not one feedwatch supports."""


class DatabaseUnavailableError(FeedwatchError):
    """The database cannot be reached."""


class SchemaMismatchError(FeedwatchError):
    """The database schema is not the one this version of feedwatch knows."""


class FeedNotFoundError(FeedwatchError):
    """The feed does not exist."""


class PartitionNotFoundError(FeedwatchError):
    """The partition does not exist in this feed."""


class EnqueueError(FeedwatchError):
    """The items cannot be enqueued as given; nothing was written."""


class ConflictError(EnqueueError):
    """An id was enqueued again with a different payload."""


class GateError(EnqueueError):
    """The gate is lower than the partition's current gate."""


class PayloadError(EnqueueError):
    """An item's data is not bytes or JSON-serialisable, or is too large."""


class ProcessingError(FeedwatchError):
    """A processor failed on an item."""


class RetryableError(ProcessingError):
    """The processor failed, and a later attempt may succeed."""

    def __init__(self, message: str | None = None, *, delay: float | None = None) -> None:
        super().__init__(message)
        #: Seconds until the next attempt (e.g. from ``Retry-After``); ``None``
        #: means the feed's backoff decides. A delay given this way does not
        #: count as a failure.
        self.delay = delay


class PermanentError(ProcessingError):
    """The processor failed, and retrying will not help."""
