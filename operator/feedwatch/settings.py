"""Settings: one dataclass per concern, every field with its unit.

A setting has one name everywhere: the dataclass field, the CLI flag
(``--poll-interval``), the environment variable (``FEEDWATCH_POLL_INTERVAL``)
and the FeedWatcher field. :data:`SETTINGS_TABLE` in ``docs/settings.md`` is
generated from these dataclasses. Validation lives here and nowhere else.

Feed settings are stored in the feed's row so every watcher of the feed agrees
on them; watcher settings are local to one process.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from feedwatch.errors import ConfigurationError

FailurePolicy = Literal["block", "skip"]
LogFormat = Literal["text", "json"]
ENV_PREFIX = "FEEDWATCH_"


def _doc(text: str, unit: str = "", scope: str = "watcher") -> dict[str, str]:
    return {"doc": text, "unit": unit, "scope": scope}


#: The longest any delay before an item's next attempt can be: seven days. A
#: longer ``Retry-After`` or processor delay is cut to it; a feed's
#: ``backoff_base``, ``backoff_cap`` and ``poll_delay`` may not exceed it (a
#: re-drive or a gate move reaches the item sooner anyway).
MAX_DELAY = 7 * 24 * 3600.0
#: The largest count a feed setting stores (a signed 32-bit ``INTEGER`` column).
MAX_COUNT = 2**31 - 1
#: The largest ``max_item_bytes`` (a signed 64-bit column).
MAX_BYTES = 2**63 - 1

#: The feed settings that are delays (seconds).
DELAY_SETTINGS = ("backoff_base", "backoff_cap", "poll_delay")
_COUNTS = {
    "max_retries": MAX_COUNT,
    "poll_limit": MAX_COUNT,
    "max_unanswered": MAX_COUNT,
    "max_item_bytes": MAX_BYTES,
}


def _kind_problems(settings: FeedSettings) -> list[str]:
    """What a number setting holds that its column cannot (checked before the ranges are)."""
    problems = []
    for name in DELAY_SETTINGS:
        value = getattr(settings, name)
        if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value <= MAX_DELAY:
            problems.append(
                f"{name} must be a number of seconds from 0 to {MAX_DELAY:.0f} (7 days), not {value!r}"
            )
    for name, top in _COUNTS.items():
        value = getattr(settings, name)
        if type(value) is not int or value > top:  # bool is an int subclass: True is not 1
            problems.append(f"{name} must be an integer of at most {top}, not {value!r}")
    return problems


@dataclass(frozen=True)
class FeedSettings:
    """Behaviour every watcher of a feed agrees on; stored in the feed row."""

    auto_close: bool = field(
        default=True,
        metadata=_doc("Mark a partition complete once all its items are complete.", "", "feed"),
    )
    manual_checkpoint: bool = field(
        default=False,
        metadata=_doc("Never advance gates automatically; the producer moves them.", "", "feed"),
    )
    max_retries: int = field(
        default=5,
        metadata=_doc("Retryable errors allowed per item before it fails; -1 = forever.", "", "feed"),
    )
    backoff_base: float = field(default=1.0, metadata=_doc("Shortest delay before a retry.", "s", "feed"))
    backoff_cap: float = field(default=300.0, metadata=_doc("Longest delay before a retry.", "s", "feed"))
    failure_policy: FailurePolicy = field(
        default="block",
        metadata=_doc(
            "`block`: a failed item fails its partition at its gate; "
            "`skip`: the partition goes on and the item stays failed (dead letter).",
            "",
            "feed",
        ),
    )
    poll_delay: float = field(
        default=1.0,
        metadata=_doc("Delay before calling again an item answered not-done at its gate.", "s", "feed"),
    )
    poll_limit: int = field(
        default=100,
        metadata=_doc(
            "Not-done answers allowed per item and gate before it fails; 0 = no limit.", "", "feed"
        ),
    )
    max_unanswered: int = field(
        default=3,
        metadata=_doc(
            "Dispatches without an answer (watcher died or hung) before the item fails.", "", "feed"
        ),
    )
    max_item_bytes: int = field(
        default=1_048_576,
        metadata=_doc("Largest item data accepted from producers and handlers.", "bytes", "feed"),
    )
    history: bool = field(
        default=True,
        metadata=_doc("Write every item and partition transition to the history table.", "", "feed"),
    )
    paused: bool = field(
        default=False,
        metadata=_doc("Watchers stop dispatching the feed's items while set.", "", "feed"),
    )

    def __post_init__(self) -> None:
        problems = _kind_problems(self)
        if problems:
            raise ConfigurationError("invalid feed settings: " + "; ".join(problems))
        if self.max_retries < -1:
            problems.append("max_retries must be -1 (forever) or >= 0")
        if self.backoff_base <= 0 or self.backoff_cap < self.backoff_base:
            problems.append("backoff_base must be > 0 and backoff_cap >= backoff_base")
        if self.failure_policy not in ("block", "skip"):
            problems.append(f"failure_policy must be 'block' or 'skip', not {self.failure_policy!r}")
        if self.poll_delay < 0 or self.poll_limit < 0:
            problems.append("poll_delay and poll_limit must be >= 0")
        if self.max_unanswered < 1:
            problems.append("max_unanswered must be >= 1")
        if self.max_item_bytes < 1:
            problems.append("max_item_bytes must be >= 1")
        if problems:
            raise ConfigurationError("invalid feed settings: " + "; ".join(problems))

    def replace(self, **changes: Any) -> FeedSettings:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class WatcherSettings:
    """Knobs local to one watcher process."""

    concurrency: int = field(default=16, metadata=_doc("Processor calls in flight at once."))
    batch_size: int = field(default=500, metadata=_doc("Rows per claim or commit statement."))
    poll_interval: float = field(
        default=1.0, metadata=_doc("How often an idle watcher looks for work and balances.", "s")
    )
    lease_duration: float = field(default=30.0, metadata=_doc("How long a lease lasts.", "s"))
    renew_interval: float = field(
        default=0.0, metadata=_doc("How often leases are renewed; 0 = lease_duration / 3.", "s")
    )
    lease_margin: float = field(
        default=0.0,
        metadata=_doc(
            "Stop dispatching this long before the lease could expire; 0 = lease_duration / 10.", "s"
        ),
    )
    max_partitions: int = field(default=1000, metadata=_doc("Most partitions one watcher leases at once."))
    grace_period: float = field(
        default=10.0,
        metadata=_doc("On shutdown or hand-off, how long in-flight items may finish.", "s"),
    )
    commit_interval: float = field(
        default=0.02, metadata=_doc("Longest wait to gather results into one commit.", "s")
    )
    handler_timeout: float = field(
        default=30.0, metadata=_doc("Deadline of one processor call (read timeout for HTTP).", "s")
    )
    handler_connect_timeout: float = field(
        default=5.0, metadata=_doc("Connect timeout of the HTTP processor.", "s")
    )
    handler_headers: str = field(
        default="",
        metadata=_doc(
            "Extra HTTP headers for the handler, `Name: value` pairs separated by newlines "
            "(secret: never logged)."
        ),
    )
    handler_health_path: str = field(
        default="", metadata=_doc("Path on the handler that /readyz checks; empty = none.")
    )
    handler_max_body: int = field(
        default=16_777_216, metadata=_doc("Largest handler response read.", "bytes")
    )
    health_port: int = field(default=8080, metadata=_doc("Port of /healthz, /readyz and /metrics; 0 = off."))
    log_format: LogFormat = field(default="text", metadata=_doc("`text` or `json`."))
    log_level: str = field(default="INFO", metadata=_doc("Python logging level."))

    def __post_init__(self) -> None:
        problems = []
        if self.concurrency < 1:
            problems.append("concurrency must be >= 1")
        if not 1 <= self.batch_size <= 5000:
            problems.append("batch_size must be between 1 and 5000")
        if self.lease_duration <= 0 or self.poll_interval <= 0:
            problems.append("lease_duration and poll_interval must be > 0")
        if self.renew_interval < 0 or self.renewal_period >= self.lease_duration:
            problems.append("renew_interval must be shorter than lease_duration")
        if self.margin >= self.lease_duration - self.renewal_period:
            problems.append("lease_margin must leave time between renewals")
        if self.max_partitions < 1:
            problems.append("max_partitions must be >= 1")
        if self.grace_period < 0 or self.handler_timeout <= 0:
            problems.append("grace_period must be >= 0 and handler_timeout > 0")
        if self.log_format not in ("text", "json"):
            problems.append(f"log_format must be 'text' or 'json', not {self.log_format!r}")
        if problems:
            raise ConfigurationError("invalid watcher settings: " + "; ".join(problems))

    @property
    def renewal_period(self) -> float:
        return self.renew_interval or self.lease_duration / 3

    @property
    def margin(self) -> float:
        return self.lease_margin or self.lease_duration / 10

    def replace(self, **changes: Any) -> WatcherSettings:
        return dataclasses.replace(self, **changes)


def _package_version() -> str:
    try:
        return importlib.metadata.version("feedwatch")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return "0.0.0"


OPERATOR_ENV_PREFIX = "FEEDWATCH_OPERATOR_"


@dataclass(frozen=True)
class OperatorSettings:
    """Settings of the ``feedwatch operator`` process (flags or ``FEEDWATCH_OPERATOR_*`` variables)."""

    namespaces: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "Namespaces to serve (kopf patterns such as `team-*` allowed); empty = all namespaces. "
            "As a variable: comma-separated.",
            "",
            "operator",
        ),
    )
    watcher_image: str = field(
        default=f"feedwatch:{_package_version()}",
        metadata=_doc(
            "Image of the watcher pods when a FeedWatcher gives no `image`; the default is the image "
            "`hack/image` builds for this version (the Helm chart sets the published one).",
            "",
            "operator",
        ),
    )
    health_port: int = field(
        default=8080,
        metadata=_doc("Port of the operator's /healthz and /metrics; 0 = off.", "", "operator"),
    )
    metrics: bool = field(default=True, metadata=_doc("Serve /metrics on the health port.", "", "operator"))
    log_format: LogFormat = field(default="text", metadata=_doc("`text` or `json`.", "", "operator"))
    log_level: str = field(default="INFO", metadata=_doc("Python logging level.", "", "operator"))
    secret_check_interval: float = field(
        default=10.0,
        metadata=_doc("How often referenced Secrets are read again (one GET each).", "s", "operator"),
    )
    database_retry_cap: float = field(
        default=60.0,
        metadata=_doc("Longest backoff between retries of an unreachable database.", "s", "operator"),
    )

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.health_port <= 65535:
            problems.append("health_port must be between 0 and 65535")
        if self.log_format not in ("text", "json"):
            problems.append(f"log_format must be 'text' or 'json', not {self.log_format!r}")
        if self.secret_check_interval <= 0 or self.database_retry_cap <= 0:
            problems.append("secret_check_interval and database_retry_cap must be > 0")
        if not self.watcher_image:
            problems.append("watcher_image must not be empty")
        if problems:
            raise ConfigurationError("invalid operator settings: " + "; ".join(problems))

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> OperatorSettings:
        """Build from ``FEEDWATCH_OPERATOR_*`` variables; overrides that are not None win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            variable = OPERATOR_ENV_PREFIX + f.name.upper()
            if overrides.get(f.name) is not None:
                values[f.name] = overrides[f.name]
            elif variable in env and f.name == "namespaces":
                values[f.name] = tuple(n.strip() for n in env[variable].split(",") if n.strip())
            elif variable in env:
                values[f.name] = coerce(cls, f.name, env[variable])
        if "namespaces" in values:
            values["namespaces"] = tuple(values["namespaces"])
        return cls(**values)


def env_name(name: str) -> str:
    """The environment variable of a setting: ``FEEDWATCH_`` + upper case."""
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    """The CLI flag of a setting: ``--`` + dashes."""
    return "--" + name.replace("_", "-")


def coerce(cls: type[Any], name: str, raw: str) -> Any:
    """Parse a string (flag or variable) into the type of ``cls.name``."""
    default = {f.name: f.default for f in fields(cls)}[name]
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return lowered in ("1", "true", "yes", "on")
        raise ConfigurationError(f"{name} = {raw!r} is not a valid bool (true/false)")
    try:
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} = {raw!r} is not a valid {type(default).__name__}") from None
    return raw


def from_environment(cls: type[Any], env: Mapping[str, str] | None = None, **overrides: Any) -> Any:
    """Build ``cls`` from ``FEEDWATCH_*`` variables; explicit overrides win."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(cls):
        if overrides.get(f.name) is not None:
            values[f.name] = overrides[f.name]
        elif env_name(f.name) in env:
            values[f.name] = coerce(cls, f.name, env[env_name(f.name)])
    return cls(**values)


def settings_table() -> str:
    """The Markdown table of every setting, for the docs."""
    rows = [
        "| setting | flag | variable | unit | default | scope | meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for cls in (FeedSettings, WatcherSettings):
        for f in fields(cls):
            meta = f.metadata
            name = f.name if cls is WatcherSettings else "feed_" + f.name
            rows.append(
                f"| `{f.name}` | `{flag_name(name)}` | `{env_name(name)}` | {meta.get('unit', '')} "
                f"| `{f.default!r}` | {meta.get('scope', 'watcher')} | {meta.get('doc', '')} |"
            )
    return "\n".join(rows)
