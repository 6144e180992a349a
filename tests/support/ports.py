"""A free TCP port on the loopback interface, for a server a test starts."""

from __future__ import annotations

import socket


def free_port(preferred: int = 0) -> int:
    """``preferred`` if it is free on 127.0.0.1, else a port the kernel picks (``0``: always the latter).

    The port is free when returned, not reserved: another process could take it before the
    caller binds it.
    """
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise AssertionError("no free port on 127.0.0.1")
