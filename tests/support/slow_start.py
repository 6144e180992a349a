"""A processor module slow to import: it holds ``feedwatch watch`` in its start-up.

At import it creates the file named by ``FEEDWATCH_TEST_STARTING`` (so a test
knows the process is past its signal set-up) and then sleeps
``FEEDWATCH_TEST_START_SECONDS``, a window in which to signal it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from feedwatch import Item, Result

Path(os.environ["FEEDWATCH_TEST_STARTING"]).touch()
time.sleep(float(os.environ.get("FEEDWATCH_TEST_START_SECONDS", "3")))


async def process(item: Item) -> Result:
    return Result(done=True)
