"""The handler reply contract, shared by the HTTP processor and dict-returning callables.

``{"gate": int, "done": bool, "data": any, "error": {"message": str, "no_retry": bool}}``;
gofeed's ``complete``/``response`` spellings are accepted (``done``/``data`` win).

Every value is checked here, at the boundary, so nothing the database cannot
store gets past it: a gate is a JSON integer (``true`` is not gate 1) that
fits the gate column (0 to :data:`MAX_GATE`), ``done`` and ``no_retry`` are
JSON booleans (the string ``"false"`` is not false). A reply that breaks the
contract is a retryable error that names the offending field, so the item is
retried within ``max_retries`` and its error says what the handler got wrong.
"""

from __future__ import annotations

from typing import Any

from feedwatch.errors import PermanentError, RetryableError
from feedwatch.processors.base import UNSET, Result
from feedwatch.store.schema import MAX_GATE


def check_gate(gate: Any, *, field: str = "gate") -> int:
    """``gate`` as an int the gate column stores; a :class:`RetryableError` naming it if not."""
    if type(gate) is not int:  # bool is an int subclass: True is not gate 1
        raise RetryableError(f"{field} must be an integer, not {_preview(gate)}")
    if not 0 <= gate <= MAX_GATE:
        raise RetryableError(f"{field} must be between 0 and {MAX_GATE}, not {_preview(gate)}")
    return gate


def check_result(result: Result) -> Result:
    """A :class:`Result` built in Python, checked as strictly as a JSON reply."""
    if type(result.done) is not bool:
        raise RetryableError(f"done must be True or False, not {_preview(result.done)}")
    if result.gate is not None:
        check_gate(result.gate)
    return result


def parse_reply(reply: Any) -> Result:
    """A :class:`Result` from a decoded reply; raise for errors and malformed replies."""
    if not isinstance(reply, dict):
        raise RetryableError(f"the reply is JSON {type(reply).__name__}, not an object")
    error = reply.get("error")
    if error:
        if isinstance(error, dict):
            message = str(error.get("message") or "the handler reported an error")
            no_retry = error.get("no_retry")
            if no_retry is not None and type(no_retry) is not bool:
                raise RetryableError(
                    f"error.no_retry must be true or false, not {_preview(no_retry)} "
                    f"(the handler's error: {_preview(message)})"
                )
        else:
            message, no_retry = str(error), False
        raise (PermanentError if no_retry else RetryableError)(message)
    if "done" in reply:
        done = reply["done"]
    elif "complete" in reply:
        done = reply["complete"]
    else:
        raise RetryableError("the reply has neither done/complete nor error: " + _preview(reply))
    if type(done) is not bool:
        raise RetryableError(f"done must be true or false, not {_preview(done)}")
    gate = reply.get("gate")
    if gate is not None:
        check_gate(gate)
    if "data" in reply:
        data = reply["data"]
    elif "response" in reply:
        data = reply["response"]
    else:
        data = UNSET
    return Result(done=done, gate=gate, data=data)


def _preview(value: Any, limit: int = 200) -> str:
    try:
        text = repr(value)
    except Exception as error:  # a user object whose repr fails still gets a message
        text = f"<{type(value).__name__}: repr failed with {type(error).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."
