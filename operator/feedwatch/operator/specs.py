"""The FeedWatcher, parsed: frozen dataclasses, and the one home of the spec's defaults.

``crds/feedwatcher.yaml`` checks the shape of a FeedWatcher before it is stored;
:meth:`FeedWatcherSpec.from_object` turns the stored object into typed values and
checks what a schema cannot (no ``FEEDWATCH_*`` variable in the pod template, feed
settings that :class:`~feedwatch.settings.FeedSettings` accepts), raising
:class:`InvalidSpecError` with a message that names the field and says what to do.

Every field's metadata holds ``path``: where it is read in the object (from the
parent object; from the FeedWatcher itself for :class:`FeedWatcherSpec`). Parsing
is driven by those paths and the field types, and a unit test walks the same
paths through the CRD's schema, so the code and the CRD cannot drift apart: a
field one has and the other lacks, or a default that differs, fails that test.
The dataclass defaults are the only defaults in the code; the CRD repeats them
so ``kubectl get -o yaml`` shows them.

Pure: imports neither kopf, kubernetes nor the store.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

from feedwatch.errors import ConfigurationError
from feedwatch.settings import ENV_PREFIX, FeedSettings, WatcherSettings, env_name

ImagePullPolicy = Literal["Always", "IfNotPresent", "Never"]
Metric = Literal["partitions", "items"]
LogFormat = Literal["text", "json"]

#: The longest feed name the store accepts (``feedwatch.producer``'s id limit).
MAX_FEED_NAME = 200
#: The label on a FeedWatcher's Deployment and pods naming it (also ``status.selector``).
NAME_LABEL = "feedwatch.dev/feedwatcher"
#: The keys of ``spec.podTemplate.spec`` merged into the watcher pods' spec.
POD_SPEC_FIELDS = (
    "serviceAccountName",
    "nodeSelector",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "priorityClassName",
    "imagePullSecrets",
    "volumes",
)
#: The keys of ``spec.podTemplate.container`` merged into the watcher container.
CONTAINER_FIELDS = ("env", "envFrom", "volumeMounts")


class InvalidSpecError(ConfigurationError):
    """The FeedWatcher's spec cannot be used as written; fix the field named."""


def _meta(path: str, setting: str = "") -> dict[str, Any]:
    """A field's metadata: read at ``path``; ``setting`` names the settings field it feeds."""
    return {"path": tuple(path.split(".")), "setting": setting}


def camel(name: str) -> str:
    """``max_retries`` -> ``maxRetries``: the FeedWatcher's spelling of a settings name."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def snake(name: str) -> str:
    """``maxRetries`` -> ``max_retries``."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


@dataclass(frozen=True, kw_only=True)
class SecretKeyRef:
    """A key of a Secret in the FeedWatcher's namespace."""

    name: str = field(metadata=_meta("name"))
    key: str = field(metadata=_meta("key"))


@dataclass(frozen=True, kw_only=True)
class UrlSecretRef(SecretKeyRef):
    """The Secret key holding the database URL."""

    key: str = field(default="url", metadata=_meta("key"))


@dataclass(frozen=True, kw_only=True)
class HeadersSecretRef(SecretKeyRef):
    """The Secret key holding the handler's extra headers (``Name: value`` lines)."""

    key: str = field(default="headers", metadata=_meta("key"))


@dataclass(frozen=True, kw_only=True)
class DatabaseSpec:
    """Where the feed lives."""

    url_secret_ref: UrlSecretRef = field(metadata=_meta("urlSecretRef"))
    table_prefix: str = field(default="", metadata=_meta("tablePrefix"))
    migrate: bool = field(default=True, metadata=_meta("migrate"))


@dataclass(frozen=True, kw_only=True)
class HandlerSpec:
    """The HTTP handler the watchers POST items to."""

    url: str = field(metadata=_meta("url", "handler"))
    timeout_seconds: float = field(default=30.0, metadata=_meta("timeoutSeconds", "handler_timeout"))
    connect_timeout_seconds: float = field(
        default=5.0, metadata=_meta("connectTimeoutSeconds", "handler_connect_timeout")
    )
    health_path: str = field(default="", metadata=_meta("healthPath", "handler_health_path"))
    headers_secret_ref: HeadersSecretRef | None = field(default=None, metadata=_meta("headersSecretRef"))

    def env(self) -> dict[str, str]:
        """The ``FEEDWATCH_*`` variables of the handler (the headers come from their Secret)."""
        return _env(self)


@dataclass(frozen=True, kw_only=True)
class WatcherSpec:
    """Watcher-local knobs, passed to the pods as ``FEEDWATCH_*`` variables."""

    concurrency: int = field(default=16, metadata=_meta("concurrency", "concurrency"))
    batch_size: int = field(default=500, metadata=_meta("batchSize", "batch_size"))
    poll_interval_seconds: float = field(default=1.0, metadata=_meta("pollIntervalSeconds", "poll_interval"))
    lease_duration_seconds: float = field(
        default=30.0, metadata=_meta("leaseDurationSeconds", "lease_duration")
    )
    grace_period_seconds: float = field(default=30.0, metadata=_meta("gracePeriodSeconds", "grace_period"))
    log_format: LogFormat = field(default="json", metadata=_meta("logFormat", "log_format"))

    def env(self) -> dict[str, str]:
        """``{"FEEDWATCH_CONCURRENCY": "16", ...}``: every knob, named as the settings name it."""
        return _env(self)


@dataclass(frozen=True, kw_only=True)
class PodTemplateSpec:
    """What the user merges into the watcher pods (core types are checked by the API server)."""

    labels: Mapping[str, str] = field(default_factory=dict, metadata=_meta("metadata.labels"))
    annotations: Mapping[str, str] = field(default_factory=dict, metadata=_meta("metadata.annotations"))
    spec: Mapping[str, Any] = field(default_factory=dict, metadata=_meta("spec"))
    container: Mapping[str, Any] = field(default_factory=dict, metadata=_meta("container"))


@dataclass(frozen=True, kw_only=True)
class FallbackSpec:
    """Replicas to run after repeated failed backlog reads (KEDA's ``fallback``)."""

    failure_threshold: int = field(default=3, metadata=_meta("failureThreshold"))
    replicas: int = field(metadata=_meta("replicas"))


@dataclass(frozen=True, kw_only=True)
class AutoscalingSpec:
    """Backlog-driven scaling, with KEDA's names and meanings."""

    enabled: bool = field(default=True, metadata=_meta("enabled"))
    min_replica_count: int = field(default=0, metadata=_meta("minReplicaCount"))
    max_replica_count: int = field(default=10, metadata=_meta("maxReplicaCount"))
    metric: Metric = field(default="partitions", metadata=_meta("metric"))
    target_backlog_per_replica: int = field(default=10, metadata=_meta("targetBacklogPerReplica"))
    activation_backlog: int = field(default=0, metadata=_meta("activationBacklog"))
    polling_interval: int = field(default=15, metadata=_meta("pollingInterval"))
    cooldown_period: int = field(default=300, metadata=_meta("cooldownPeriod"))
    scale_down_stabilization_window: int = field(
        default=300, metadata=_meta("behavior.scaleDown.stabilizationWindowSeconds")
    )
    fallback: FallbackSpec | None = field(default=None, metadata=_meta("fallback"))


@dataclass(frozen=True, kw_only=True)
class FeedWatcherSpec:
    """A FeedWatcher as the operator reads it: identity from metadata, the rest from spec."""

    name: str = field(metadata=_meta("metadata.name"))
    namespace: str = field(default="", metadata=_meta("metadata.namespace"))
    uid: str = field(default="", metadata=_meta("metadata.uid"))
    generation: int = field(default=0, metadata=_meta("metadata.generation"))
    creation_timestamp: str = field(default="", metadata=_meta("metadata.creationTimestamp"))
    # "" only while parsing: from_object fills in metadata.name.
    feed: str = field(default="", metadata=_meta("spec.feed"))
    database: DatabaseSpec = field(metadata=_meta("spec.database"))
    handler: HandlerSpec | None = field(default=None, metadata=_meta("spec.handler"))
    processor: str | None = field(default=None, metadata=_meta("spec.processor"))
    feed_settings: Mapping[str, Any] = field(default_factory=dict, metadata=_meta("spec.feedSettings"))
    image: str | None = field(default=None, metadata=_meta("spec.image"))
    image_pull_policy: ImagePullPolicy = field(default="IfNotPresent", metadata=_meta("spec.imagePullPolicy"))
    replicas: int = field(default=1, metadata=_meta("spec.replicas"))
    watcher: WatcherSpec = field(default_factory=WatcherSpec, metadata=_meta("spec.watcher"))
    resources: Mapping[str, Any] = field(default_factory=dict, metadata=_meta("spec.resources"))
    pod_template: PodTemplateSpec = field(default_factory=PodTemplateSpec, metadata=_meta("spec.podTemplate"))
    autoscaling: AutoscalingSpec | None = field(default=None, metadata=_meta("spec.autoscaling"))
    paused: bool = field(default=False, metadata=_meta("spec.paused"))

    @classmethod
    def from_object(cls, body: Mapping[str, Any]) -> FeedWatcherSpec:
        """Parse a FeedWatcher object (a dict as the API server returns it).

        Raises :class:`InvalidSpecError` naming the field and what to change.
        """
        if not isinstance(body, Mapping):
            raise InvalidSpecError(f"a FeedWatcher must be an object, not {type(body).__name__}")
        if not isinstance(body.get("spec"), Mapping):
            raise InvalidSpecError("the FeedWatcher has no spec: add spec.database and spec.handler")
        values = _parse(cls, body, "")
        values["feed"] = values.get("feed") or values["name"]
        values["feed_settings"] = _feed_settings(values.get("feed_settings", {}))
        spec = cls(**values)
        spec._check()
        return spec

    @property
    def autoscaling_enabled(self) -> bool:
        """Whether the operator's autoscaler, not ``spec.replicas``, sets the replicas."""
        return self.autoscaling is not None and self.autoscaling.enabled

    def secret_names(self) -> set[str]:
        """Every Secret the spec references (database, headers, the container's env and envFrom).

        References marked ``optional: true`` are left out: their absence is no problem.
        """
        names = {self.database.url_secret_ref.name}
        if self.handler is not None and self.handler.headers_secret_ref is not None:
            names.add(self.handler.headers_secret_ref.name)
        for var in self.pod_template.container.get("env") or ():
            ref = ((var or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name") and not ref.get("optional"):
                names.add(ref["name"])
        for source in self.pod_template.container.get("envFrom") or ():
            ref = (source or {}).get("secretRef") or {}
            if ref.get("name") and not ref.get("optional"):
                names.add(ref["name"])
        return names

    def _check(self) -> None:
        """What the CRD's rules also say, for objects stored before a rule existed."""
        if (self.handler is None) == (self.processor is None):
            raise InvalidSpecError(
                "set exactly one of spec.handler.url (an HTTP handler) and spec.processor "
                "(module:callable baked into spec.image)"
            )
        if self.processor is not None and not self.image:
            raise InvalidSpecError(
                "spec.processor needs spec.image: an image that contains the processor's module"
            )
        if self.handler is not None and not re.match(r"https?://[^/]", self.handler.url):
            raise InvalidSpecError(
                f"spec.handler.url must be an http:// or https:// URL, not {self.handler.url!r}"
            )
        if not 1 <= len(self.feed) <= MAX_FEED_NAME:
            raise InvalidSpecError(
                f"spec.feed must be 1 to {MAX_FEED_NAME} characters (the store's limit), not {self.feed!r}"
            )
        if len(self.name) > 63:
            raise InvalidSpecError(
                f"metadata.name is {len(self.name)} characters; use at most 63 (it is a label value)"
            )
        scaling = self.autoscaling
        if scaling is not None:
            if scaling.min_replica_count > scaling.max_replica_count:
                raise InvalidSpecError(
                    f"spec.autoscaling.minReplicaCount ({scaling.min_replica_count}) is above "
                    f"maxReplicaCount ({scaling.max_replica_count}): lower min or raise max"
                )
            if scaling.fallback is not None and scaling.fallback.replicas > scaling.max_replica_count:
                raise InvalidSpecError(
                    f"spec.autoscaling.fallback.replicas ({scaling.fallback.replicas}) is above "
                    f"maxReplicaCount ({scaling.max_replica_count}): lower it or raise max"
                )
        _check_container(self.pod_template.container)
        try:
            WatcherSettings(
                **{f.metadata["setting"]: getattr(self.watcher, f.name) for f in fields(WatcherSpec)}
            )
        except ConfigurationError as e:
            raise InvalidSpecError(f"spec.watcher: {e}") from None


def _env(spec: Any) -> dict[str, str]:
    out = {}
    for f in fields(spec):
        value = getattr(spec, f.name)
        if f.metadata["setting"] and value is not None:
            out[env_name(f.metadata["setting"])] = str(value)
    return out


def _check_container(container: Mapping[str, Any]) -> None:
    for index, var in enumerate(container.get("env") or ()):
        name = var.get("name") if isinstance(var, Mapping) else None
        if not isinstance(name, str):
            raise InvalidSpecError(f"spec.podTemplate.container.env[{index}] needs a name")
        if name.startswith(ENV_PREFIX):
            raise InvalidSpecError(
                f"spec.podTemplate.container.env sets {name}: the operator owns every "
                f"{ENV_PREFIX}* variable; use the matching spec field instead "
                "(spec.watcher, spec.handler, spec.database, spec.feedSettings)"
            )


def _feed_settings(given: Mapping[str, Any]) -> dict[str, Any]:
    """camelCase keys -> FeedSettings' snake_case names, values checked against its types."""
    hints = {f.name: typing.get_type_hints(FeedSettings)[f.name] for f in fields(FeedSettings)}
    out: dict[str, Any] = {}
    for key, value in given.items():
        name = snake(key)
        if name not in hints or camel(name) != key:
            known = ", ".join(camel(n) for n in hints)
            raise InvalidSpecError(f"spec.feedSettings.{key} is not a feed setting; use one of: {known}")
        out[name] = _convert(hints[name], value, f"spec.feedSettings.{key}")
    # Only the given fields are applied (the others keep the feed's values): check each
    # against the defaults, keeping the backoff pair consistent when one side is given.
    trial = dict(out)
    defaults = FeedSettings()
    if "backoff_base" in trial and "backoff_cap" not in trial:
        trial["backoff_cap"] = max(defaults.backoff_cap, trial["backoff_base"])
    if "backoff_cap" in trial and "backoff_base" not in trial:
        trial["backoff_base"] = min(defaults.backoff_base, trial["backoff_cap"])
    try:
        FeedSettings(**trial)
    except ConfigurationError as e:
        raise InvalidSpecError(f"spec.feedSettings: {e} (names in camelCase in the FeedWatcher)") from None
    return out


def _parse(cls: type[Any], obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The keyword arguments of ``cls`` read from ``obj`` along each field's path."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        path = f.metadata["path"]
        label = where + ".".join(path)
        raw: Any = obj
        for key in path:
            raw = raw.get(key) if isinstance(raw, Mapping) else None
        if raw is None:
            if f.default is MISSING and f.default_factory is MISSING:
                raise InvalidSpecError(f"{label} is required")
            continue  # the dataclass default applies
        values[f.name] = _convert(hints[f.name], raw, label)
    return values


def _convert(hint: Any, raw: Any, label: str) -> Any:
    """Check ``raw`` against the type ``hint``; nested spec classes are parsed."""
    options = [a for a in typing.get_args(hint) if a is not type(None)] if _is_union(hint) else [hint]
    target = options[0]
    if isinstance(target, type) and dataclasses.is_dataclass(target):
        if not isinstance(raw, Mapping):
            raise InvalidSpecError(f"{label} must be an object, not {raw!r}")
        return target(**_parse(target, raw, label + "."))
    origin = typing.get_origin(target)
    if origin is Literal:
        allowed = typing.get_args(target)
        if raw not in allowed:
            raise InvalidSpecError(f"{label} must be one of {', '.join(map(str, allowed))}, not {raw!r}")
        return raw
    if origin is Mapping or target is Mapping:
        if not isinstance(raw, Mapping):
            raise InvalidSpecError(f"{label} must be an object, not {raw!r}")
        return copy.deepcopy(dict(raw))
    if target is bool:
        if not isinstance(raw, bool):
            raise InvalidSpecError(f"{label} must be true or false, not {raw!r}")
        return raw
    if target is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise InvalidSpecError(f"{label} must be a whole number, not {raw!r}")
        return raw
    if target is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise InvalidSpecError(f"{label} must be a number, not {raw!r}")
        return float(raw)
    if target is str:
        if not isinstance(raw, str):
            raise InvalidSpecError(f"{label} must be a string, not {raw!r}")
        return raw
    raise TypeError(f"no conversion for {hint!r} at {label}")  # a bug in this module


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)
