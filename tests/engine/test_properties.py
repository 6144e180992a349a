"""Property-based: whatever a processor answers, every item settles and the watcher keeps serving.

Hypothesis throws arbitrary replies at a running watcher (SQLite, kept cheap:
a bounded number of examples, each a small batch of items):

- at the HTTP processor, from a real aiohttp server on loopback: any status,
  any ``Retry-After`` and content type, any body (contract-shaped JSON with
  any values, any JSON, any bytes);
- at the in-process processor: any return value (contract dicts, Results
  with any fields, values of any type) and any exception (delays of any
  size, ``SystemExit``), from sync and async callables.

Every item must end complete, waiting (polled, or at a later gate), retried
(delayed with an error) or failed with an error, and a steady partition fed
meanwhile must keep completing, with the watcher alive and healthy.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedwatch import CallableProcessor, Feed, Item, PermanentError, Result, RetryableError, Store
from feedwatch.processors.http import HTTPProcessor
from feedwatch.store.records import ItemRow
from feedwatch.testing import WatcherRunner, assert_invariants, wait_for
from tests.conftest import database_url
from tests.engine.helpers import FAST

pytestmark = pytest.mark.engine

EXAMPLES = settings(
    max_examples=10,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SETTINGS = FAST.replace(handler_timeout=2, concurrency=16)
_ids = itertools.count()

# -- values -------------------------------------------------------------------------------

awkward_ints = st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**63, 2**64, -(2**63), 10**30])
numbers = st.one_of(st.integers(), awkward_ints, st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def contract_replies(draw: st.DrawFn) -> dict[str, Any]:
    """A reply shaped like the contract, each field present or not, with any value."""
    reply: dict[str, Any] = {}
    for key, values in (
        ("done", st.one_of(st.booleans(), json_values)),
        ("complete", st.one_of(st.booleans(), json_values)),
        ("gate", st.one_of(st.integers(min_value=0, max_value=3), awkward_ints, json_values)),
        ("data", json_values),
        ("response", json_values),
        (
            "error",
            st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {}, optional={"message": json_values, "no_retry": st.one_of(st.booleans(), json_values)}
                ),
            ),
        ),
    ):
        if draw(st.booleans()):
            reply[key] = draw(values)
    return reply


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
retry_afters = st.one_of(
    st.none(),
    st.integers(min_value=-5, max_value=10**40).map(str),
    st.sampled_from(["Fri, 31 Dec 9999 23:59:59 GMT", "Wed, 21 Oct 2015 07:28:00 GMT", "1e308", "0", "²"]),
    header_text,
)
bodies = st.one_of(
    contract_replies().map(lambda r: json.dumps(r).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)


@st.composite
def http_replies(draw: st.DrawFn) -> tuple[int, dict[str, str], bytes]:
    status = draw(
        st.one_of(st.sampled_from([200, 200, 200, 204, 302, 404, 429, 500, 503]), st.integers(200, 599))
    )
    headers = {"Content-Type": draw(st.one_of(st.just("application/json"), header_text))}
    after = draw(retry_afters)
    if after is not None:
        headers["Retry-After"] = after
    return status, headers, draw(bodies)


class _Unencodable:
    pass


results = st.builds(
    Result,
    done=st.one_of(st.booleans(), json_values),
    gate=st.one_of(st.none(), st.integers(min_value=0, max_value=3), awkward_ints, st.booleans()),
    data=st.one_of(json_values, st.just({1, 2}), st.just(_Unencodable()), st.binary(max_size=8)),
)
exceptions = st.one_of(
    st.builds(RetryableError, st.text(max_size=20), delay=st.one_of(st.none(), numbers)),
    st.builds(PermanentError, st.text(max_size=20)),
    st.builds(ValueError, st.text(max_size=20)),
    st.builds(SystemExit, st.integers(0, 3)),
    st.just(RuntimeError()),
)
returns = st.one_of(
    results, contract_replies(), json_values, st.just(_Unencodable()), exceptions.map(lambda e: ("raise", e))
)


# -- the fixtures ----------------------------------------------------------------------------


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    store = Store.open(database_url("sqlite", sqlite_url))
    yield store
    store.close()


def settled(row: ItemRow) -> bool:
    """Complete; failed with an error; waiting (polled, at a later gate); or retried with an error."""
    if row.status == "complete":
        return True
    if row.status == "failed":
        return bool(row.error)
    return row.status == "available" and (
        bool(row.error) or row.polls > 0 or row.gate > 0 or row.attempts > 1
    )


def run_examples(feed: Feed, runner: WatcherRunner, replies: list[Any], answers: dict[str, Any]) -> None:
    """Enqueue one item per reply (each in its own partition) plus a steady item; wait for all."""
    names = [f"x{next(_ids)}" for _ in replies]
    answers.update(zip(names, replies, strict=True))
    steady = f"s{next(_ids)}"
    for name in names:
        feed.enqueue(name, {name: 1})
    feed.enqueue("steady", {steady: 1})
    wait_for(
        lambda: all(settled(r) for n in names for r in feed.items(n)), timeout=30, message=f"{names} settle"
    )
    wait_for(lambda: any(r.id == steady and r.status == "complete" for r in feed.items("steady")), timeout=30)
    watcher = runner.watcher
    assert watcher is not None and watcher._failure is None and watcher.liveness.problems() == []
    for name in names:
        [row] = feed.items(name)
        assert row.status == "complete" or row.error or row.polls or row.gate, (answers[name], row)


# -- HTTP ------------------------------------------------------------------------------------------


@contextmanager
def reply_server(answers: dict[str, Any]) -> Iterator[str]:
    """A real aiohttp server on loopback answering each item's first call with its drawn reply."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    asked: set[str] = set()

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        name = request.headers.get("X-Feed-Item", "")
        if name in asked or name not in answers:
            return web.json_response({"done": True})
        asked.add(name)
        status, headers, body = answers[name]
        return web.Response(status=status, headers=headers, body=body)

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, access_log=None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=main, name="reply-server", daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _feed(store: Store, name: str) -> Feed:
    return Feed.create(store, name, max_retries=0, poll_delay=3600, backoff_base=0.05, backoff_cap=0.2)


def test_any_http_reply_settles_its_item_while_a_steady_partition_keeps_completing(
    sqlite_store: Store, feed_name: str
) -> None:
    feed = _feed(sqlite_store, feed_name)
    answers: dict[str, Any] = {}
    with reply_server(answers) as url:
        processor = HTTPProcessor(url, feed=feed.name, timeout=2, connect_timeout=1)
        with WatcherRunner(sqlite_store, feed.name, processor, SETTINGS) as runner:

            @EXAMPLES
            @given(st.lists(http_replies(), min_size=1, max_size=6))
            def check(replies: list[tuple[int, dict[str, str], bytes]]) -> None:
                run_examples(feed, runner, replies, answers)

            try:
                check()
                assert runner.watcher is not None
                assert runner.watcher.liveness.problems() == []
            finally:
                assert runner._loop is not None
                asyncio.run_coroutine_threadsafe(processor.close(), runner._loop).result(10)
    assert_invariants(sqlite_store, feed.name)


# -- in-process --------------------------------------------------------------------------------


def _answer(answers: dict[str, Any]) -> Callable[[Item], Any]:
    asked: set[str] = set()

    def answer(item: Item) -> Any:
        if item.id in asked or item.id not in answers:
            return None  # the first call only; later calls complete
        asked.add(item.id)
        value = answers[item.id]
        if isinstance(value, tuple) and value and value[0] == "raise":
            raise value[1]
        return value

    return answer


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_any_return_value_or_exception_settles_its_item_while_a_steady_partition_keeps_completing(
    sqlite_store: Store, feed_name: str, kind: str
) -> None:
    feed = _feed(sqlite_store, feed_name)
    answers: dict[str, Any] = {}
    answer = _answer(answers)

    async def answer_async(item: Item) -> Any:
        return answer(item)

    func = answer if kind == "sync" else answer_async
    processor = CallableProcessor(func, timeout=2, concurrency=8)
    with WatcherRunner(sqlite_store, feed.name, processor, SETTINGS) as runner:

        @EXAMPLES
        @given(st.lists(returns, min_size=1, max_size=6))
        def check(replies: list[Any]) -> None:
            run_examples(feed, runner, replies, answers)

        check()
        assert runner.watcher is not None
        assert runner.watcher.liveness.problems() == []
    assert_invariants(sqlite_store, feed.name)
