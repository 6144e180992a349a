"""The bare HTTP client of scenario 2: ``python -m bench.bareclient --url U --items N ...``.

The same client as feedwatch's HTTP processor (an aiohttp ``ClientSession``
with a ``TCPConnector(limit=concurrency, keepalive_timeout=30)``, the same
headers, the reply read and parsed by the same contract code), driving the
same handler with the same concurrency, and no database at all. Each item goes
through every gate, as in the feedwatch run. Prints one JSON line: the wall
clock (epoch seconds) of the first request and of the last reply, and the
requests made, and its own CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp

from feedwatch.processors.contract import parse_reply


async def run(url: str, items: int, gates: int, concurrency: int, partition: str) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=35, sock_connect=5, sock_read=30)
    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for n in range(items):
        queue.put_nowait((n, 0))
    done = 0
    requests = 0

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal done, requests
            while True:
                n, gate = await queue.get()
                if n < 0:
                    return
                headers = {
                    "Content-Type": "application/json",
                    "X-Feed-Name": "bare",
                    "X-Feed-Partition": partition,
                    "X-Feed-Item": f"i{n}",
                    "X-Feed-Gate": str(gate),
                    "X-Feed-Attempt": "1",
                }
                async with session.post(
                    url, data=b'{"n":%d}' % n, headers=headers, allow_redirects=False
                ) as response:
                    body = await response.content.read(16_777_217)
                    status = response.status
                requests += 1
                if not 200 <= status < 300:
                    raise RuntimeError(f"handler answered {status}")
                result = parse_reply(json.loads(body))
                if result.done or gate + 1 >= gates:
                    done += 1
                    if done == items:
                        for _ in range(concurrency):
                            queue.put_nowait((-1, 0))
                else:
                    queue.put_nowait((n, gate + 1))

        start = time.time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        end = time.time()
    return {"start": start, "end": end, "requests": requests, "cpu": time.process_time()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--gates", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--partition", default="p0")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.items, args.gates, args.concurrency, args.partition))))


if __name__ == "__main__":
    main()
