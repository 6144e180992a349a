"""feedwatch: a queue scheduling system on a relational database.

Partitions fan out into items; watchers lease partitions, send items to a
processor, retry what fails, and wait at gates until a partition's items all
reach them (fan-in).
"""

from feedwatch.engine import Watcher
from feedwatch.errors import (
    ConfigurationError,
    ConflictError,
    DatabaseUnavailableError,
    DatabaseURLError,
    EnqueueError,
    FeedNotFoundError,
    FeedwatchError,
    GateError,
    PartitionNotFoundError,
    PayloadError,
    PermanentError,
    ProcessingError,
    RetryableError,
    SchemaMismatchError,
)
from feedwatch.processors import CallableProcessor, Item, Processor, Result
from feedwatch.producer import Feed
from feedwatch.settings import FeedSettings, WatcherSettings
from feedwatch.store import Store, migrate

__version__ = "0.1.0"

__all__ = [
    "CallableProcessor",
    "ConfigurationError",
    "ConflictError",
    "DatabaseURLError",
    "DatabaseUnavailableError",
    "EnqueueError",
    "Feed",
    "FeedNotFoundError",
    "FeedSettings",
    "FeedwatchError",
    "GateError",
    "Item",
    "PartitionNotFoundError",
    "PayloadError",
    "PermanentError",
    "ProcessingError",
    "Processor",
    "Result",
    "RetryableError",
    "SchemaMismatchError",
    "Store",
    "Watcher",
    "WatcherSettings",
    "__version__",
    "migrate",
]
