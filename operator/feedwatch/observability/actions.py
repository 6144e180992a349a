"""Every ``action`` a feedwatch log record can carry: the one list, for alerts and log queries.

A log line's message is for people and may change; its ``action`` is the stable
key to match on (``action=lease_lost`` in text logs, ``"action": "lease_lost"``
in JSON lines). docs/logging.md lists them; a unit test keeps the two equal and
checks that no code logs an action missing here.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    # -- feedwatch watch: start and stop -----------------------------------
    WATCH_STARTED = "watch_started"  #: the service is about to start its watcher
    SCHEMA_MIGRATED = "schema_migrated"  #: `watch --migrate` applied migrations
    SCHEMA_CURRENT = "schema_current"  #: `watch --migrate` found nothing to apply
    SHUTDOWN_REQUESTED = "shutdown_requested"  #: SIGTERM/SIGINT: graceful stop begins
    SIGNAL_IGNORED = "signal_ignored"  #: a further signal while already stopping
    WATCHER_STARTED = "watcher_started"  #: clock synchronised with the database; leasing starts
    WATCHER_STOPPED = "watcher_stopped"  #: leases released, the watcher is done
    WATCHER_FAILED = "watcher_failed"  #: a task of the watcher died of a bug; it stops
    GRACE_EXCEEDED = "grace_exceeded"  #: calls still running at the end of the grace period, cancelled
    RELEASE_FAILED = "release_failed"  #: leases could not be released at stop (they expire instead)
    DATABASE_UNAVAILABLE = "database_unavailable"  #: database trouble, retried (logged at most every 5 s)

    # -- leases (the partition in ``partition``) ----------------------------
    LEASE_ACQUIRED = "lease_acquired"  #: a free or expired partition leased
    LEASE_RECEIVED = "lease_received"  #: a partition received by hand-off (work stealing)
    LEASE_HANDED_OFF = "lease_handed_off"  #: a partition given to the watcher that asked for it
    LEASE_RELEASED = "lease_released"  #: a partition let go (idle, waiting for retries, stopping)
    LEASE_LOST = "lease_lost"  #: a partition another watcher holds now (ours expired)
    STEAL_REQUESTED = "steal_requested"  #: asked a busier watcher for a partition, or was asked

    # -- gates and partitions ----------------------------------------------
    GATE_ADVANCED = "gate_advanced"  #: every item reached the gate: the partition moves on
    GATE_MOVED = "gate_moved"  #: the gate changed under the watcher (by hand, or a checkpoint)
    PARTITION_COMPLETED = "partition_completed"  #: the last gate done: the partition is complete
    PARTITION_FAILED = "partition_failed"  #: a failed item closed the partition (policy `block`)

    # -- items (``item`` names it; DEBUG except ``item_failed``) -----------
    ITEM_GATE = "item_gate"  #: the item moves to a later gate
    ITEM_POLL = "item_poll"  #: the item asked to be called again later
    ITEM_RETRY = "item_retry"  #: the call failed and is retried with backoff
    ITEM_DELAY = "item_delay"  #: the processor asked for a delay before the next attempt
    ITEM_FAIL = "item_fail"  #: the call failed for good (its result is being committed)
    ITEM_FAILED = "item_failed"  #: an item's failure committed (retries exhausted or permanent)
    LOST_RACE = "lost_race"  #: a result discarded: the item changed since its claim
    RESULT_REFUSED = "result_refused"  #: the database refused a result's data; the item fails

    # -- the operator ------------------------------------------------------
    OPERATOR_STARTED = "operator_started"  #: watching its namespaces (named in the line)
    OPERATOR_STOPPED = "operator_stopped"  #: stopped (SIGTERM)
    OPERATOR_FAILED = "operator_failed"  #: the operator could not start (the reason follows)
    DEPLOYMENT_CREATED = "deployment_created"  #: a FeedWatcher's Deployment created
    DEPLOYMENT_UPDATED = "deployment_updated"  #: a FeedWatcher's Deployment changed to match its spec
    DATABASE_PREPARED = "database_prepared"  #: migrations run and the feed created for a FeedWatcher
    DATABASE_UNREACHABLE = "database_unreachable"  #: a FeedWatcher's database did not answer
    RECONCILE_FAILED = "reconcile_failed"  #: a FeedWatcher could not be reconciled; retried with backoff
    DEGRADED = "degraded"  #: a FeedWatcher has a problem (its condition says which)
    RECOVERED = "recovered"  #: the problem is gone
    SECRET_READ_FAILED = "secret_read_failed"  #: a referenced Secret could not be read
    EVENT_FAILED = "event_failed"  #: a Kubernetes Event could not be posted
    LOOP_PASS_FAILED = "loop_pass_failed"  #: one pass of the background loop failed; the next runs
    LOOP_DIED = "loop_died"  #: the background loop ended; /healthz fails so Kubernetes restarts it
    AUTOSCALER_EVENT = "autoscaler_event"  #: the autoscaler decided something (scaled, fell back)
    AUTOSCALER_FAILED = "autoscaler_failed"  #: one autoscaling pass failed; the next runs
