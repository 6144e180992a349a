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
from feedwatch.observability.actions import Action
from feedwatch.observability.logging import configure
from feedwatch.settings import OperatorSettings


def settings_from(args: argparse.Namespace) -> OperatorSettings:
    """The settings from the flags ``feedwatch.cli`` parsed (kept there, so kopf loads only here)."""
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
    try:
        asyncio.run(
            kopf.operator(
                clusterwide=not settings.namespaces,
                namespaces=list(settings.namespaces),
                standalone=True,
                memo=kopf.Memo(feedwatch_settings=settings),
            )
        )
    except Exception as error:  # e.g. a startup handler failed: say why in one line, exit 1
        cause = error.__cause__ or error
        logging.getLogger("feedwatch.operator").error(  # noqa: TRY400 - kopf logged the traceback
            "the operator stopped: %s", cause, extra={"action": Action.OPERATOR_FAILED}
        )
        return 1
    return 0


def main(args: argparse.Namespace) -> int:
    return run(settings_from(args))
