"""The ``feedwatch`` command line.

Every watcher setting is a flag (``--poll-interval``) and a variable
(``FEEDWATCH_POLL_INTERVAL``); every feed setting a ``--feed-*`` flag. Exit
codes: 0 success, 1 operational error, 2 usage error (bad option or input, bad URL,
unknown feed).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, fields
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from feedwatch.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    FeedNotFoundError,
    FeedwatchError,
    PartitionNotFoundError,
    PayloadError,
    SchemaMismatchError,
)
from feedwatch.observability.actions import Action
from feedwatch.settings import (
    FeedSettings,
    WatcherSettings,
    coerce,
    env_name,
    flag_name,
    from_environment,
)
from feedwatch.store.schema import MAX_GATE

USAGE_ERRORS = (ConfigurationError, FeedNotFoundError, PartitionNotFoundError, PayloadError)
#: The largest ``--limit`` of one page of items.
MAX_PAGE = 100_000
#: Primary keys are signed 64-bit integers.
MAX_PK = 2**63 - 1
#: The longest ``--older-than`` (100 years): any longer is no date at all.
MAX_DURATION = timedelta(days=36500)


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """Usage errors print one clear line and exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"feedwatch: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def _bounded_int(name: str, low: int, high: int) -> Any:
    """An argparse type: an integer from ``low`` to ``high``, or a one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, not {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be from {low} to {high}, not {text[:40]}")
        return value

    return parse


GATE = _bounded_int("a gate", 0, MAX_GATE)


def _db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=os.environ.get("FEEDWATCH_DATABASE_URL"),
        help="SQLAlchemy database URL (default: $FEEDWATCH_DATABASE_URL), e.g. sqlite:///feed.db, "
        "mysql+pymysql://user:pass@host/db, postgresql+psycopg://user:pass@host/db",
    )
    parser.add_argument(
        "--table-prefix",
        default=os.environ.get("FEEDWATCH_TABLE_PREFIX", ""),
        help="prefix of every table name (isolates deployments in one database)",
    )


def _feed(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--feed",
        default=os.environ.get("FEEDWATCH_FEED"),
        required=required and not os.environ.get("FEEDWATCH_FEED"),
        help="feed name (default: $FEEDWATCH_FEED)",
    )


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", choices=["table", "json"], default="table")


def _feed_settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("feed settings (stored in the feed; every watcher agrees)")
    for f in fields(FeedSettings):
        group.add_argument(
            flag_name("feed_" + f.name),
            dest="feed_" + f.name,
            metavar=type(f.default).__name__.upper(),
            help=f"{f.metadata['doc']} (default {f.default!r})",
        )


def _feed_changes(args: argparse.Namespace) -> dict[str, Any]:
    changes = {}
    for f in fields(FeedSettings):
        raw = getattr(args, "feed_" + f.name, None)
        if raw is None:
            raw = os.environ.get(env_name("feed_" + f.name))
        if raw is not None:
            changes[f.name] = coerce(FeedSettings, f.name, raw)
    return changes


def build_parser() -> Parser:
    parser = Parser(prog="feedwatch", description="A queue scheduling system on a relational database.")
    parser.add_argument("--version", action="version", version=f"feedwatch {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("watch", help="run a watcher: lease partitions, process items")
    _db(p)
    _feed(p)
    p.add_argument(
        "--handler",
        default=os.environ.get("FEEDWATCH_HANDLER"),
        help="handler URL (HTTP processor)",
    )
    p.add_argument(
        "--processor",
        default=os.environ.get("FEEDWATCH_PROCESSOR"),
        help="module:callable (in-process)",
    )
    p.add_argument(
        "--migrate",
        action="store_true",
        default=_env_flag("FEEDWATCH_MIGRATE"),
        help="run migrations first (safe with many replicas)",
    )
    p.add_argument(
        "--create-feed",
        action="store_true",
        default=_env_flag("FEEDWATCH_CREATE_FEED"),
        help="create the feed with default settings if it does not exist",
    )
    group = p.add_argument_group("watcher settings (also FEEDWATCH_<NAME> variables)")
    for f in fields(WatcherSettings):
        group.add_argument(
            flag_name(f.name),
            dest=f.name,
            metavar=type(f.default).__name__.upper(),
            help=f"{f.metadata['doc']} (default {f.default!r}; ${env_name(f.name)})",
        )

    p = sub.add_parser("enqueue", help="add items to a partition (created if new)")
    _db(p)
    _feed(p)
    p.add_argument("--gate", type=GATE, help="gate of the items (default: the partition's gate)")
    p.add_argument(
        "--not-before",
        help="ISO time before which the items are not due (UTC unless it carries an offset)",
    )
    p.add_argument("--content-type", help="content type of the items' data")
    p.add_argument("--file", "-f", help="items from a file: JSON lines or a JSON array ('-' = stdin)")
    p.add_argument("partition")
    p.add_argument(
        "items",
        nargs="*",
        metavar="ITEM_JSON",
        help='items as JSON: {"id": "a", "data": {...}}; without an id, the id is a hash of the data',
    )
    _output(p)

    p = sub.add_parser("status", help="partitions with counts per status and gate; failed items")
    _db(p)
    _feed(p, required=False)
    p.add_argument("partition", nargs="?")
    _output(p)

    p = sub.add_parser("items", help="read items (results) back, paginated")
    _db(p)
    _feed(p)
    p.add_argument("partition")
    p.add_argument("--gate", type=GATE)
    p.add_argument("--status", choices=["available", "complete", "failed"])
    p.add_argument(
        "--after", type=_bounded_int("a pk", 0, MAX_PK), help="pk of the last item of the previous page"
    )
    p.add_argument(
        "--limit", type=_bounded_int("a page size", 1, MAX_PAGE), default=100, help="items per page"
    )
    _output(p)

    p = sub.add_parser("retry", help="re-drive failed items of a partition, or of the whole feed with --all")
    _db(p)
    _feed(p)
    p.add_argument("partition", nargs="?")
    p.add_argument("--all", action="store_true", help="every failed partition of the feed")

    p = sub.add_parser("gate", help="move a partition's gate by hand (manual checkpoint)")
    _db(p)
    _feed(p)
    p.add_argument("partition")
    p.add_argument("gate", type=GATE)

    for name, text in (
        ("cancel", "fail a partition's open items and the partition"),
        ("delete", "delete a partition, its items and its history"),
    ):
        p = sub.add_parser(name, help=text)
        _db(p)
        _feed(p)
        p.add_argument("partition")

    p = sub.add_parser("feed", help="create, update, show or list feeds")
    fsub = p.add_subparsers(dest="feed_command", required=True, parser_class=Parser)
    for name, text in (
        ("create", "create a feed (no-op if it exists)"),
        ("update", "change a feed's settings"),
    ):
        q = fsub.add_parser(name, help=text)
        _db(q)
        q.add_argument("name")
        _feed_settings_flags(q)
    q = fsub.add_parser("show", help="a feed's settings")
    _db(q)
    q.add_argument("name")
    _output(q)
    q = fsub.add_parser("list", help="every feed")
    _db(q)

    p = sub.add_parser("migrate", help="create or upgrade the schema (under a database lock)")
    _db(p)

    p = sub.add_parser("purge", help="delete complete partitions and history older than a duration")
    _db(p)
    _feed(p)
    p.add_argument("--older-than", required=True, help="e.g. 30d, 12h, 90m")
    p.add_argument("--history-only", action="store_true", help="keep partitions, purge history rows")

    p = sub.add_parser("operator", help="run the Kubernetes operator (FeedWatchers -> watcher Deployments)")
    p.add_argument(
        "--namespace",
        "-n",
        dest="namespaces",
        action="append",
        metavar="NS",
        help="serve FeedWatchers in NS (repeatable; patterns like 'team-*'); default: all",
    )
    p.add_argument("--watcher-image", help="image of the watcher pods when a FeedWatcher gives none")
    p.add_argument("--health-port", type=int, help="port of /healthz and /metrics, 0 = off (default 8080)")
    p.add_argument("--log-format", choices=["text", "json"])
    p.add_argument("--log-level")

    p = sub.add_parser("demo", help="screen job applications: the whole system in one command")
    p.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    p.add_argument("--watchers", type=int, default=1, help="watcher processes (1 = in-process)")
    p.add_argument("--handler", help="HTTP handler URL instead of the in-process processor")
    p.add_argument("--postings", type=int, default=4)
    p.add_argument("--resumes", type=int, default=250, help="resumes per posting")
    p.add_argument("--seed", type=int, default=7)
    return parser


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def _version() -> str:
    from feedwatch import __version__  # noqa: PLC0415

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "enqueue" and not any(e.startswith("--") for e in extra):
        # ITEM_JSON after an option (`enqueue P --gate 1 '{...}'`): argparse leaves them over.
        args.items.extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(COMMANDS[args.command](args) or 0)
    except UsageError as e:
        print(f"feedwatch: error: {e}", file=sys.stderr)
        return 2
    except USAGE_ERRORS as e:
        print(f"feedwatch: error: {e}", file=sys.stderr)
        return 2
    except SchemaMismatchError as e:
        print(f"feedwatch: error: {e}", file=sys.stderr)
        return 1
    except (FeedwatchError, DatabaseUnavailableError) as e:
        print(f"feedwatch: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# -- commands -------------------------------------------------------------------


def _store(args: argparse.Namespace, check: bool = True) -> Any:
    from feedwatch.store import Store  # noqa: PLC0415

    if not args.db:
        raise UsageError("no database: pass --db URL or set FEEDWATCH_DATABASE_URL")
    return Store.open(args.db, prefix=args.table_prefix, check=check)


def _feed_obj(args: argparse.Namespace) -> Any:
    from feedwatch.producer import Feed  # noqa: PLC0415

    if not args.feed:
        raise UsageError("no feed: pass --feed NAME or set FEEDWATCH_FEED")
    return Feed(_store(args), args.feed)


def cmd_watch(args: argparse.Namespace) -> int:
    from feedwatch.observability.logging import configure  # noqa: PLC0415
    from feedwatch.producer import Feed  # noqa: PLC0415
    from feedwatch.serving import StartupSignals, build_processor, serve  # noqa: PLC0415
    from feedwatch.store.connection import redact  # noqa: PLC0415

    startup = StartupSignals()
    startup.install()
    overrides = {
        f.name: coerce(WatcherSettings, f.name, getattr(args, f.name))
        for f in fields(WatcherSettings)
        if getattr(args, f.name) is not None
    }
    settings: WatcherSettings = from_environment(WatcherSettings, **overrides)
    configure(settings.log_format, settings.log_level)
    _set_title(f"feedwatch watch --feed {args.feed}")
    if not args.db:
        raise UsageError("no database: pass --db URL or set FEEDWATCH_DATABASE_URL")
    log = logging.getLogger("feedwatch.serving")
    if args.migrate:
        revision, steps = _migrate(args.db, args.table_prefix)
        if steps:
            log.info(
                "schema migrated to revision %s: %s",
                revision,
                "; ".join(steps),
                extra={"action": Action.SCHEMA_MIGRATED},
            )
        else:
            log.info("schema already at revision %s", revision, extra={"action": Action.SCHEMA_CURRENT})
    store = _store(args)
    if args.create_feed:
        Feed.create(store, args.feed)
    else:
        store.load_feed(args.feed)  # a missing feed is a usage error, reported before anything else
    processor = build_processor(args.feed, settings, handler=args.handler, processor=args.processor)
    log.info("watching feed %s on %s", args.feed, redact(args.db), extra={"action": Action.WATCH_STARTED})
    asyncio.run(serve(store, args.feed, processor, settings, startup=startup))
    return 0


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _migrate(url: str, prefix: str) -> tuple[str, list[str]]:
    """Migrate; return the revision and the upgrades this process ran (none if another did)."""
    from feedwatch.store import migrate  # noqa: PLC0415

    logger = logging.getLogger("alembic.runtime.migration")
    collect = _Collect()
    saved = logger.level, logger.propagate
    logger.addHandler(collect)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        revision = migrate(url, prefix=prefix)
    finally:
        logger.removeHandler(collect)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    return revision, [m.strip() for m in collect.messages if m.startswith("Running upgrade")]


def _parse_items(args: argparse.Namespace) -> list[tuple[str, Any]]:
    raw: list[Any] = []
    for text in args.items:
        try:
            raw.append(json.loads(text))
        except ValueError as e:
            raise UsageError(f"ITEM_JSON {text[:60]!r} is not JSON: {e}") from None
    if args.file:
        stripped = _read_file(args.file).strip()
        try:
            if stripped.startswith("["):
                raw.extend(json.loads(stripped))
            else:
                raw.extend(json.loads(line) for line in stripped.splitlines() if line.strip())
        except ValueError as e:
            raise UsageError(f"{args.file}: not JSON lines or a JSON array: {e}") from None
    if not raw:
        raise UsageError("no items: give ITEM_JSON arguments or --file")
    items = []
    for number, entry in enumerate(raw, 1):
        if isinstance(entry, dict) and "id" in entry:
            items.append((_item_id(entry["id"], number), entry.get("data")))
        else:
            data = entry.get("data") if isinstance(entry, dict) and "data" in entry else entry
            digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
            items.append((digest, data))
    return items


def _read_file(path: str) -> str:
    """The text of ``--file`` (``-``: standard input); a usage error if it cannot be read."""
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as e:
        raise UsageError(f"--file {path}: cannot read it: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"--file {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _item_id(value: Any, number: int) -> str:
    """An item's ``id`` from JSON: a string, or an integer written as one; never a Python repr."""
    if isinstance(value, str):
        return value
    if type(value) is int:
        return str(value)
    shown = json.dumps(value)
    raise UsageError(
        f'item {number}: "id" must be a string or an integer, not {shown[:60]}; '
        'leave "id" out to use a hash of the data'
    )


def _not_before(text: str) -> datetime:
    """``--not-before``: an ISO time, UTC unless it carries an offset (kept, as UTC)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--not-before {text[:60]!r} is not an ISO time (e.g. 2030-01-31T12:00:00+01:00)"
        ) from None
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when


def cmd_enqueue(args: argparse.Namespace) -> int:
    feed = _feed_obj(args)
    not_before = _not_before(args.not_before) if args.not_before else None
    result = feed.enqueue(
        args.partition,
        _parse_items(args),
        gate=args.gate,
        not_before=not_before,
        content_type=args.content_type,
    )
    if args.output == "json":
        print(json.dumps(asdict(result)))
    else:
        print(
            f"partition {args.partition}: {result.added} added, {result.unchanged} already there, "
            f"gate {result.gate}{' (created)' if result.created_partition else ''}"
            f"{' (reopened)' if result.reopened else ''}"
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    store = _store(args)
    feeds = [args.feed] if args.feed else store.feed_names()
    report: list[dict[str, Any]] = []
    for name in feeds:
        store.load_feed(name)
        parts = [store.partition(name, args.partition)] if args.partition else store.partitions(name)
        for part in parts:
            summary = store.summary(name, part.id)
            report.append(
                {
                    "feed": name,
                    "partition": part.id,
                    "status": part.status,
                    "gate": part.gate,
                    "owner": part.owner,
                    "error": part.error,
                    "counts": [
                        {"status": s, "gate": g, "items": n} for (s, g), n in sorted(summary.counts.items())
                    ],
                    "failed": [{"item": i, "gate": g, "error": e} for i, g, e in summary.failed],
                }
            )
    if args.output == "json":
        print(json.dumps(report, indent=2, default=str))
        return 0
    if not report:
        print("no partitions")
        return 0
    print(f"{'FEED':<16} {'PARTITION':<24} {'STATUS':<10} {'GATE':>4}  {'OWNER':<28} COUNTS")
    for r in report:
        counts = ", ".join(f"{c['status']}@{c['gate']}={c['items']}" for c in r["counts"])
        owner = r["owner"] or "-"
        print(f"{r['feed']:<16} {r['partition']:<24} {r['status']:<10} {r['gate']:>4}  {owner:<28} {counts}")
        if r["error"]:
            print(f"    error: {r['error']}")
        for f in r["failed"]:
            print(f"    failed item {f['item']} at gate {f['gate']}: {f['error']}")
    return 0


def cmd_items(args: argparse.Namespace) -> int:
    feed = _feed_obj(args)
    rows = feed.items(args.partition, gate=args.gate, status=args.status, after=args.after, limit=args.limit)
    out = [
        {
            "pk": r.pk,
            "id": r.id,
            "status": r.status,
            "gate": r.gate,
            "attempts": r.attempts,
            "error": r.error,
            "content_type": r.content_type,
            "data": _decode(r.data, r.content_type),
        }
        for r in rows
    ]
    if args.output == "json":
        print(json.dumps(out, indent=2, default=str))
    else:
        for r in out:
            error = f"  error: {r['error']}" if r["error"] else ""
            print(
                f"{r['pk']:>8} {r['id']:<24} {r['status']:<10} gate={r['gate']} "
                f"attempts={r['attempts']} data={json.dumps(r['data'], default=str)[:80]}{error}"
            )
        if len(rows) == args.limit:
            print(f"(more: --after {rows[-1].pk})")
    return 0


def _decode(data: bytes | None, content_type: str) -> Any:
    if data is None:
        return None
    if "json" in content_type:
        try:
            return json.loads(data)
        except ValueError:
            pass
    return data.decode("utf-8", "replace")


def cmd_retry(args: argparse.Namespace) -> int:
    if bool(args.partition) == bool(args.all):
        raise UsageError("give a PARTITION or --all")
    count = _feed_obj(args).retry(None if args.all else args.partition)
    print(f"re-drove {count} failed item(s)")
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    old = _feed_obj(args).set_gate(args.partition, args.gate)
    print(f"partition {args.partition}: gate {old} -> {args.gate}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    print(f"cancelled {_feed_obj(args).cancel(args.partition)} open item(s)")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    print(f"deleted partition {args.partition} and {_feed_obj(args).delete(args.partition)} item(s)")
    return 0


def cmd_feed(args: argparse.Namespace) -> int:
    from feedwatch.producer import Feed  # noqa: PLC0415

    store = _store(args)
    if args.feed_command == "list":
        for name in store.feed_names():
            print(name)
        return 0
    if args.feed_command == "show":
        settings = asdict(store.load_feed(args.name))
        if args.output == "json":
            print(json.dumps(settings))
        else:
            for k, v in settings.items():
                print(f"{k:<18} {v}")
        return 0
    changes = _feed_changes(args)
    if args.feed_command == "create":
        Feed.create(store, args.name, **changes)
        print(f"feed {args.name} ready")
        return 0
    if not changes:
        raise UsageError("nothing to update: give --feed-* options")
    Feed(store, args.name).update(**changes)
    print(f"feed {args.name} updated: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    if not args.db:
        raise UsageError("no database: pass --db URL or set FEEDWATCH_DATABASE_URL")
    revision, steps = _migrate(args.db, args.table_prefix)
    done = f"applied {len(steps)} migration(s)" if steps else "already current"
    print(f"schema at revision {revision} ({done})")
    return 0


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``: at most :data:`MAX_DURATION`."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not match:
        raise UsageError(f"duration {text[:60]!r} must look like 30d, 12h, 90m or 45s")
    value, unit = float(match.group(1)), match.group(2)
    seconds = value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    if seconds > MAX_DURATION.total_seconds():
        raise UsageError(f"duration {text[:60]!r} is too long: at most {MAX_DURATION.days}d (100 years)")
    return timedelta(seconds=seconds)


def cmd_purge(args: argparse.Namespace) -> int:
    removed, rows = _feed_obj(args).purge(parse_duration(args.older_than), partitions=not args.history_only)
    print(f"purged {removed} partition(s) and {rows} history row(s)")
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    from feedwatch.operator.running import main as run_operator  # noqa: PLC0415 - kopf only here

    return run_operator(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from feedwatch.demo import run_demo  # noqa: PLC0415

    return run_demo(
        db=args.db,
        watchers=args.watchers,
        handler=args.handler,
        postings=args.postings,
        resumes=args.resumes,
        seed=args.seed,
    )


def _set_title(title: str) -> None:
    """Keep the database URL (and its password) out of the process title."""
    try:
        import setproctitle  # noqa: PLC0415

        setproctitle.setproctitle(title)
    except ImportError:  # pragma: no cover - a declared dependency
        pass


COMMANDS = {
    "watch": cmd_watch,
    "enqueue": cmd_enqueue,
    "status": cmd_status,
    "items": cmd_items,
    "retry": cmd_retry,
    "gate": cmd_gate,
    "cancel": cmd_cancel,
    "delete": cmd_delete,
    "feed": cmd_feed,
    "migrate": cmd_migrate,
    "purge": cmd_purge,
    "demo": cmd_demo,
    "operator": cmd_operator,
}

if __name__ == "__main__":
    sys.exit(main())
