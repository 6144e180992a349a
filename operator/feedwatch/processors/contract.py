"""The handler reply contract, shared by the HTTP processor and dict-returning callables.

``{"gate": int, "done": bool, "data": any, "error": {"message": str, "no_retry": bool}}``;
gofeed's ``complete``/``response`` spellings are accepted (``done``/``data`` win).
"""

from __future__ import annotations

from typing import Any

from feedwatch.errors import PermanentError, RetryableError
from feedwatch.processors.base import UNSET, Result


def parse_reply(reply: Any) -> Result:
    """A :class:`Result` from a decoded reply; raise for errors and malformed replies."""
    if not isinstance(reply, dict):
        raise RetryableError(f"the reply is JSON {type(reply).__name__}, not an object")
    error = reply.get("error")
    if error:
        if isinstance(error, dict):
            message = str(error.get("message") or "the handler reported an error")
            no_retry = bool(error.get("no_retry"))
        else:
            message, no_retry = str(error), False
        raise (PermanentError if no_retry else RetryableError)(message)
    if "done" in reply:
        done = reply["done"]
    elif "complete" in reply:
        done = reply["complete"]
    else:
        raise RetryableError("the reply has neither done/complete nor error: " + _preview(reply))
    if not isinstance(done, bool):
        raise RetryableError(f"done must be true or false, not {done!r}")
    gate = reply.get("gate")
    if gate is not None and (not isinstance(gate, int) or isinstance(gate, bool)):
        raise RetryableError(f"gate must be an integer, not {gate!r}")
    if "data" in reply:
        data = reply["data"]
    elif "response" in reply:
        data = reply["response"]
    else:
        data = UNSET
    return Result(done=done, gate=gate, data=data)


def _preview(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
