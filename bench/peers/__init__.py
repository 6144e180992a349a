"""The "peers" scenario: the same fan-out/fan-in workload on the task queues a user would otherwise pick.

One module per peer (``<name>_peer.py``: ``DATABASES``, ``FANIN``,
``describe(database)`` and ``drive(ctx)``), the shared task bodies and timing
log (``workload``), the subprocess runner with its timeout and the measurement
(``runner``), and the scenario that puts feedwatch's figure next to theirs
(``scenario``). docs/benchmarks.md, "Peers", has the settings and figures.
"""
