"""The FeedWatcher operator (kopf): FeedWatchers in, watcher Deployments out.

Importing the package registers kopf's handlers, so ``kopf run -m
feedwatch.operator`` works; ``feedwatch operator`` (``running.py``) is the
usual entry. Nothing outside this package imports kopf.
"""

from feedwatch.operator import handlers

__all__ = ["handlers"]
