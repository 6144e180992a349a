"""``feedwatch operator``: run the operator (kopf inside, standalone) in this process.

Flags override ``FEEDWATCH_OPERATOR_*`` variables, which override defaults
(:class:`feedwatch.settings.OperatorSettings`). The Kubernetes configuration
is the in-cluster one, else ``KUBECONFIG``. SIGTERM stops it cleanly (kopf
handles the signal; the cleanup handler stops the loop and the endpoint).
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import kopf

import feedwatch.operator.handlers  # noqa: F401 - registers the handlers
from feedwatch.observability.logging import configure
from feedwatch.settings import OperatorSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        "-n",
        dest="namespaces",
        action="append",
        metavar="NS",
        help="serve FeedWatchers in NS (repeatable; kopf patterns like 'team-*' allowed); "
        "default: all namespaces ($FEEDWATCH_OPERATOR_NAMESPACES, comma-separated)",
    )
    parser.add_argument(
        "--watcher-image",
        help="image of the watcher pods when a FeedWatcher gives none ($FEEDWATCH_OPERATOR_WATCHER_IMAGE)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        help="port of /healthz and /metrics, 0 = off (default 8080; $FEEDWATCH_OPERATOR_HEALTH_PORT)",
    )
    parser.add_argument("--log-format", choices=["text", "json"], help="($FEEDWATCH_OPERATOR_LOG_FORMAT)")
    parser.add_argument("--log-level", help="Python logging level ($FEEDWATCH_OPERATOR_LOG_LEVEL)")


def settings_from(args: argparse.Namespace) -> OperatorSettings:
    return OperatorSettings.from_environment(
        namespaces=tuple(args.namespaces) if args.namespaces else None,
        watcher_image=args.watcher_image,
        health_port=args.health_port,
        log_format=args.log_format,
        log_level=args.log_level,
    )


def run(settings: OperatorSettings) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    configure(settings.log_format, settings.log_level)
    feedwatch_handler = logging.getLogger("feedwatch").handlers[0]
    kopf_logger = logging.getLogger("kopf")
    kopf_logger.handlers[:] = [feedwatch_handler]
    kopf_logger.setLevel(logging.DEBUG if settings.log_level.upper() == "DEBUG" else logging.WARNING)
    kopf_logger.propagate = False
    asyncio.run(
        kopf.operator(
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            standalone=True,
            memo=kopf.Memo(feedwatch_settings=settings),
        )
    )
    return 0


def main(args: argparse.Namespace) -> int:
    return run(settings_from(args))
