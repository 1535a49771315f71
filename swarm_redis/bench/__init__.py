"""Benchmark suite of swarm_redis (``swarm-redis bench``); see docs/benchmarks.md.

Scenarios live in :mod:`swarm_redis.bench.scenarios`, the DAG generator in
:mod:`swarm_redis.bench.dags`, the Lua-less Redis implementations compared against in
:mod:`swarm_redis.bench.alternatives`, tables and JSON in :mod:`swarm_redis.bench.report`.
"""

from __future__ import annotations

from collections.abc import Sequence


def run(argv: Sequence[str] | None = None) -> int:
    """Run ``swarm-redis bench`` with ``argv`` (the options after ``bench``)."""
    from swarm_redis.bench.cli import main

    return main(argv)


__all__ = ["run"]
