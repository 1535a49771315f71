"""Prometheus metrics of runs, read from Redis on every scrape (extra ``prometheus``).

:class:`RunCollector` is a custom prometheus-client collector: each scrape reads the runs'
figures with :func:`swarm_redis.ops.reads.read_snapshot` (plain reads only, so a read-only ACL
user will do) and turns them into gauges and counters labelled by ``run``.
``swarm-redis exporter --port P`` serves them over HTTP, on 127.0.0.1 unless ``--bind`` says
otherwise. It starts whether or not Redis is up: a scrape that cannot read Redis answers
``swarm_up 0`` (and nothing else), the next one tries again.

Progress is ``swarm_run_done_ratio``, the share of tasks DONE as a 0-1 ratio (Prometheus
convention: ratios, not percentages; multiply by 100 in a dashboard).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from swarm_redis.constants import TASK_STATUSES
from swarm_redis.engine.keys import RunKeys
from swarm_redis.errors import UnknownRunError
from swarm_redis.ops.reads import CorruptValueError, RunSnapshot, list_runs, read_snapshot

__all__ = ["COUNTERS", "RunCollector", "make_registry", "serve"]

logger = logging.getLogger(__name__)

#: Counters of the run's ``counters`` hash exported as ``swarm_run_<name>_total`` with their
#: help text; other counters as ``swarm_run_counter_<name>_total``; ``to:<S>`` as
#: ``swarm_run_transitions_total{status="S"}``.
COUNTERS: dict[str, str] = {
    "propagations": "Completions counted and credited to downstream tasks.",
    "claims": "Batches claimed by replicas (re-driven orphans included).",
    "acks": "Claimed batches acknowledged.",
    "releases": "Claimed batches put back unqueued.",
    "reaps": "Replicas reaped: removed because their lease expired (their batches orphaned).",
    "leader_changes": "Leadership takeovers.",
    "joins": "Replica joins.",
    "redrives": "Orphaned batches handed to a live replica.",
    "orphaned": "Batches orphaned by reaps, to be re-driven to a live replica.",
    "reconciled": "Items fixed by reconcile().",
    "batches": "Batches formed (also the sequence of batch ids).",
    "repairs": "Items fixed by verify --repair.",
}


def _metric_name(counter: str) -> str:
    """Known counters keep their name; others get a ``counter_`` infix (no clash with gauges)."""
    clean = "".join(c if c.isalnum() else "_" for c in counter)
    return f"swarm_run_{clean}" if counter in COUNTERS else f"swarm_run_counter_{clean}"


class RunCollector:
    """Collects the metrics of some or all runs under a prefix, on each scrape.

    Args:
        client: A redis-py client (any protocol, decoded or not; Cluster clients too), or None
            with ``connect``.
        prefix: Key prefix of the runs.
        runs: Run ids to export; None: every run found by SCAN at each scrape.
        connect: Makes the client at the first scrape that needs it, and again at the next
            scrape while it raises (a Cluster client connects when it is made).
    """

    def __init__(
        self,
        client: Any,
        prefix: str = "swarm",
        runs: Sequence[str] | None = None,
        *,
        connect: Callable[[], Any] | None = None,
    ):
        if client is None and connect is None:
            raise ValueError("RunCollector needs a client or a connect function")
        self.client = client
        self.connect = connect
        self.prefix = prefix
        self.runs = list(runs) if runs is not None else None

    def _snapshots(self) -> tuple[list[RunSnapshot], list[str]]:
        """The runs' figures, and the runs skipped because a stored value is damaged (one
        damaged run must not blank every other run's metrics, nor read as Redis down)."""
        client = self.client
        if client is None:
            assert self.connect is not None
            client = self.connect()
        run_ids = self.runs
        if run_ids is None:
            run_ids = [r.run_id for r in list_runs(client, self.prefix)]
        out = []
        damaged = []
        for run_id in run_ids:
            try:
                out.append(read_snapshot(client, RunKeys(self.prefix, run_id)))
            except UnknownRunError:
                continue  # purged or not created yet
            except CorruptValueError as e:
                logger.warning("swarm-redis exporter: run %s skipped: %s", run_id, e)
                damaged.append(str(run_id))
        return out, damaged

    def collect(self) -> Iterator[Metric]:
        """Read Redis and yield every metric family (``swarm_up`` 0 when Redis fails)."""
        up = GaugeMetricFamily("swarm_up", "1 when the last read of Redis succeeded.")
        try:
            snaps, damaged = self._snapshots()
        except Exception as e:  # a scrape must answer even when Redis does not
            logger.warning("swarm-redis exporter: reading Redis failed: %s", e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        unreadable = GaugeMetricFamily(
            "swarm_run_unreadable",
            "1 for a run skipped because a stored value does not parse (see swarm-redis verify).",
            labels=["run"],
        )
        for run_id in damaged:
            unreadable.add_metric([run_id], 1)
        yield unreadable
        yield from self._families(snaps)

    def _families(self, snaps: Sequence[RunSnapshot]) -> Iterator[Metric]:
        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=["run", *labels])

        tasks = gauge("swarm_run_tasks", "Tasks per status.", ["status"])
        total = gauge("swarm_run_task_count", "Tasks registered in the run.")
        ready = gauge("swarm_run_ready", "Entries in the ready-to-run queue.")
        claimed = gauge("swarm_run_claimed", "Tasks claimed by replicas, not yet acknowledged.")
        batches = gauge("swarm_run_claimed_batches", "Claimed batches (orphaned ones included).")
        orphans = gauge("swarm_run_orphaned_batches", "Batches of dead replicas awaiting re-drive.")
        reserved = gauge("swarm_run_reserved", "Capacity held by claimed batches.")
        active = gauge("swarm_run_active", "Tasks in Q/I/O/R (count against the limit).")
        limit = gauge("swarm_run_limit", "The workflow's max_concurrently_running.")
        a_active = gauge("swarm_array_active", "Active tasks of an array.", ["array"])
        a_limit = gauge("swarm_array_limit", "An array's max_concurrently_running.", ["array"])
        a_reserved = gauge("swarm_array_reserved", "Capacity held by claims, per array.", ["array"])
        alive = gauge("swarm_run_replicas_alive", "Replicas whose lease has not expired.")
        replicas = gauge("swarm_run_replicas", "Replicas registered (alive or not).")
        epoch = gauge("swarm_run_leader_epoch", "Leadership epoch (0: never led).")
        leader_alive = gauge("swarm_run_leader_alive", "1 when the leader's lease is valid.")
        ratio = gauge("swarm_run_done_ratio", "Share of the run's tasks that are DONE (0 to 1).")
        info = gauge("swarm_run_info", "Always 1; the run status as a label.", ["run_status"])
        version = gauge("swarm_run_version", "The run's write version.")
        events = gauge("swarm_run_events", "Entries kept in the run's event stream.")
        transitions = CounterMetricFamily(
            "swarm_run_transitions",
            "Task status transitions, by target status.",
            labels=["run", "status"],
        )
        counters: dict[str, CounterMetricFamily] = {}

        def counter(name: str) -> CounterMetricFamily:
            if name not in counters:
                doc = COUNTERS.get(name, f"Run counter {name!r}.")
                counters[name] = CounterMetricFamily(_metric_name(name), doc, labels=["run"])
            return counters[name]

        for s in snaps:
            run = s.run_id
            for status in TASK_STATUSES:
                tasks.add_metric([run, status], s.counts[status])
            total.add_metric([run], s.tasks)
            ready.add_metric([run], s.ready)
            claimed.add_metric([run], s.claimed)
            batches.add_metric([run], s.batches)
            orphans.add_metric([run], s.orphans)
            reserved.add_metric([run], s.reserved)
            active.add_metric([run], s.active)
            limit.add_metric([run], s.limit)
            for a in s.arrays:
                a_active.add_metric([run, a.array_id], a.active)
                a_reserved.add_metric([run, a.array_id], a.reserved)
                if a.limit is not None:
                    a_limit.add_metric([run, a.array_id], a.limit)
            alive.add_metric([run], s.replicas_alive)
            replicas.add_metric([run], len(s.replicas))
            epoch.add_metric([run], s.leader.epoch if s.leader else 0)
            leader_alive.add_metric([run], 1 if s.leader and s.leader.alive else 0)
            ratio.add_metric([run], s.done / s.tasks if s.tasks else 0.0)
            info.add_metric([run, s.run_status], 1)
            version.add_metric([run], s.version)
            events.add_metric([run], s.events)
            for status in TASK_STATUSES:
                transitions.add_metric([run, status], s.counters.get(f"to:{status}", 0))
            for name in COUNTERS:
                counter(name).add_metric([run], s.counters.get(name, 0))
            for name, value in s.counters.items():
                if not name.startswith("to:") and name not in COUNTERS:
                    counter(name).add_metric([run], value)
        yield from (tasks, total, ready, claimed, batches, orphans, reserved, active, limit)
        yield from (a_active, a_limit, a_reserved, alive, replicas, epoch, leader_alive)
        yield from (ratio, info, version, events, transitions, *counters.values())


def make_registry(
    client: Any,
    prefix: str = "swarm",
    runs: Sequence[str] | None = None,
    *,
    connect: Callable[[], Any] | None = None,
) -> Any:
    """A fresh registry holding only a :class:`RunCollector` (no process metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector(client, prefix, runs, connect=connect))
    return registry


def serve(
    client: Any,
    port: int,
    *,
    addr: str = "127.0.0.1",
    prefix: str = "swarm",
    runs: Sequence[str] | None = None,
    connect: Callable[[], Any] | None = None,
) -> None:
    """Serve ``/metrics`` on ``addr:port`` until interrupted (``connect``: see RunCollector).

    ``addr`` defaults to 127.0.0.1 (this machine only): the metrics name every run and replica,
    so listening on other interfaces (``0.0.0.0``) is a choice the caller makes explicitly.
    """
    start_http_server(
        port, addr=addr, registry=make_registry(client, prefix, runs, connect=connect)
    )
    while True:
        time.sleep(3600)
