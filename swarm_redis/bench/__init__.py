"""Benchmark suite of swarm_redis (``swarm-redis bench``); see docs/benchmarks.md.

One scenario per module in :mod:`swarm_redis.bench.scenarios` (which also runs the suite);
sizes in :mod:`~swarm_redis.bench.config`; the Redis under test in
:mod:`~swarm_redis.bench.context`; instruments in :mod:`~swarm_redis.bench.probes` and
:mod:`~swarm_redis.bench.measure`; the claim -> Q -> R -> D loop in
:mod:`~swarm_redis.bench.loop`; the DAG generator in :mod:`~swarm_redis.testing.dags`; the
Lua-less Redis implementations compared against in :mod:`~swarm_redis.bench.alternatives`;
tables, targets and JSON in :mod:`~swarm_redis.bench.report`, :mod:`~swarm_redis.bench.tables`
and :mod:`~swarm_redis.bench.targets`.
"""

from __future__ import annotations

from collections.abc import Sequence


def run(argv: Sequence[str] | None = None) -> int:
    """Run ``swarm-redis bench`` with ``argv`` (the options after ``bench``)."""
    from swarm_redis.bench.cli import main

    return main(argv)


__all__ = ["run"]
