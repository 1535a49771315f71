"""The Redis under test and what the scenarios of one suite run share: :class:`Context` (clients,
key prefix, run ids, cleanup) and the big registered runs (:class:`RegisteredRun`)."""

from __future__ import annotations

import itertools
import os
import platform
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from swarm_redis.bench.config import ARRAY_LIMIT, RUN_LIMIT, BenchConfig
from swarm_redis.bench.probes import PingProbe, longest_command_ms, used_memory
from swarm_redis.demo.embedded import EmbeddedRedis, connect, resolve_url
from swarm_redis.state import RedisSwarmState
from swarm_redis.testing.dags import Dag, DagShape, build_dag


@dataclass
class RegisteredRun:
    """A run registered by :meth:`Context.registered_run`, shared by memory/flatness/blocking."""

    shape: DagShape
    dag: Dag
    state: RedisSwarmState
    register_s: float
    memory_delta: int | None
    pings: dict[str, float] | None
    used_layers: set[int] = field(default_factory=set)

    def take_layers(self, count: int, first: int) -> Iterator[list[int]]:
        """``count`` unused layers from ``first`` on (ids), marked as used."""
        layer = first
        while count and layer < self.shape.n_layers - 1:
            if layer not in self.used_layers:
                self.used_layers.add(layer)
                count -= 1
                yield list(self.shape.layer_ids(layer))
            layer += 1


class Context:
    """The Redis under test, its clients, the key prefix and shared runs of one suite run."""

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        url, emb = resolve_url(config.url)
        self.url = url
        self.embedded: EmbeddedRedis | None = emb
        self.private = emb is not None and emb.backend == "redis-server"
        self.client = connect(url)
        self.text_client = connect(url, decode_responses=True)
        self.prefix = "bench" + secrets.token_hex(4)
        self._run_ids = itertools.count(1)
        self.runs: dict[int, RegisteredRun] = {}
        self.lifecycle_raw: dict[str, Any] | None = None
        if self.private:
            # the SLOWLOG shows the longest single calls of the blocking scenario
            self.client.config_set("slowlog-log-slower-than", 1000)
            self.client.config_set("slowlog-max-len", 100_000)

    def new_run_id(self) -> int:
        """A run id unused in this suite run (keys are also under a random prefix)."""
        return next(self._run_ids)

    def redis_version(self) -> str:
        """The server's version, or what the backend is when INFO is unavailable."""
        try:
            return str(self.text_client.info("server")["redis_version"])
        except redis.ResponseError:
            return "unknown (no INFO: fakeredis?)"

    def machine(self) -> dict[str, Any]:
        """Cores, Python, Redis version and where Redis runs."""
        import redis as redis_py

        return {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "redis_version": self.redis_version(),
            "redis_py": redis_py.__version__,
            "hiredis": bool(redis_py.utils.HIREDIS_AVAILABLE),
            "platform": platform.platform(),
            "server": (
                "private redis-server (embedded, unix socket)"
                if self.private
                else ("embedded fakeredis" if self.embedded else "given URL (may be shared)")
            ),
        }

    def registered_run(self, n: int) -> RegisteredRun:
        """A run of ``n`` tasks (flatness shape), registered once per suite run.

        The first call registers it with a PING probe running and measures the memory delta.
        """
        if n in self.runs:
            return self.runs[n]
        shape = DagShape(n, width=self.config.flat_width)
        dag = build_dag(shape, ARRAY_LIMIT)
        before = used_memory(self.client)
        state = RedisSwarmState(
            1, self.new_run_id(), 1, redis=self.client, prefix=self.prefix,
            max_concurrently_running=RUN_LIMIT,
        )  # fmt: skip
        with PingProbe(self.url) as probe:
            t0 = time.perf_counter()
            state.add_arrays(dag.arrays)
            state.add_tasks(dag.tasks)
            state.enqueue_tasks(dag.roots)
            elapsed = time.perf_counter() - t0
            probe.mark("register", t0, t0 + elapsed)
        after = used_memory(self.client)
        mem = None if after is None or before is None else after - before
        run = RegisteredRun(shape, dag, state, elapsed, mem, probe.stats("register"))
        self.runs[n] = run
        return run

    def slowlog_reset(self) -> None:
        """Empty the SLOWLOG (private server only)."""
        if self.private:
            self.client.slowlog_reset()

    def slowlog_max_ms(self) -> float | None:
        """The longest command in the SLOWLOG (ms), or None on a server not ours."""
        if not self.private:
            return None
        return longest_command_ms(self.client.slowlog_get(100_000))

    def cleanup(self) -> None:
        """Delete every key of this suite run, and stop the embedded server."""
        try:
            if self.private:
                self.client.config_set("slowlog-log-slower-than", 10000)
            batch: list[Any] = []
            for key in self.client.scan_iter(match=f"{self.prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    self.client.unlink(*batch)
                    batch = []
            if batch:
                self.client.unlink(*batch)
        finally:
            self.client.close()
            self.text_client.close()
            if self.embedded is not None:
                self.embedded.stop()
