"""Talking to the demo's HTTP handler (``examples/resume_handler.py``) outside the item path.

The handler serves ``GET /healthz`` (its classifier version and database) and
``POST /deploy`` (switch the classifier: the demo's stand-in for deploying a
new version of the handler service).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urljoin, urlsplit

from feedwatch.errors import ConfigurationError


class HandlerError(Exception):
    """The demo handler cannot be reached or refused a request."""


def _admin(url: str, path: str) -> str:
    if urlsplit(url).scheme not in ("http", "https"):
        raise ConfigurationError(f"--handler must be an http:// or https:// URL, not {url!r}")
    return urljoin(url, path)


def _call(url: str, body: Any = None, timeout: float = 10) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked in _admin
        url,
        data=data,
        headers={"Content-Type": "application/json"},
        method="POST" if data else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raise HandlerError(f"{url} answered {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise HandlerError(f"cannot reach the demo handler at {url}: {error}") from None


def handler_info(url: str) -> dict[str, Any]:
    """What the handler says of itself: ``{"classifier": "v1", "database": "..."}``."""
    info = _call(_admin(url, "/healthz"))
    if not isinstance(info, dict) or "classifier" not in info:
        raise HandlerError(
            f"{_admin(url, '/healthz')} did not answer like the demo handler "
            "(start it with `python examples/resume_handler.py --port 8000 --db URL`)"
        )
    return info


def deploy(url: str, classifier: str) -> dict[str, Any]:
    """Switch the handler's classifier version; returns its new ``/healthz`` answer."""
    reply = _call(_admin(url, "/deploy"), {"classifier": classifier})
    if not isinstance(reply, dict) or reply.get("classifier") != classifier:
        raise HandlerError(f"the handler did not switch to classifier {classifier}: {reply!r}")
    return reply
