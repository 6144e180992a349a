"""``feedwatch demo``: screening job applications with feedwatch, end to end.

``run_demo()`` is what the ``demo`` command runs (see :mod:`feedwatch.demo.running`);
``DemoProcessor`` is the processor watcher processes load with
``feedwatch watch --processor feedwatch.demo:DemoProcessor``.
"""

from feedwatch.demo.processor import DemoProcessor
from feedwatch.demo.running import run_demo

__all__ = ["DemoProcessor", "run_demo"]
