"""Processors: the pluggable work step the engine sends each item to."""

from feedwatch.processors.base import UNSET, Item, Processor, Result
from feedwatch.processors.python import CallableProcessor, load_callable

__all__ = ["UNSET", "CallableProcessor", "Item", "Processor", "Result", "load_callable"]
