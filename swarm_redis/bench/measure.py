"""Measuring a lifecycle run: :func:`measure` (wall clock, client and Redis CPU, load) and
:class:`OpStats` (Redis CPU, client CPU and Redis commands per operation)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from swarm_redis.bench.probes import LoadWatch, delta, rate, script_usec, server_cpu


def measure(client: Any, body: Callable[[], int]) -> dict[str, Any]:
    """Run ``body`` (returns tasks done); wall, client CPU, Redis CPU and script time, load."""
    cpu0, usec0 = server_cpu(client), script_usec(client)
    load = LoadWatch()
    c0, t0 = time.process_time(), time.perf_counter()
    done = body()
    wall, own = time.perf_counter() - t0, time.process_time() - c0
    cpu1, usec1 = server_cpu(client), script_usec(client)
    srv = delta(cpu1, cpu0)
    scripts = delta(usec1, usec0)
    return {
        "load": load.result(own + (srv or 0.0)),
        "tasks": done,
        "seconds": round(wall, 4),
        "tasks_per_s": round(rate(done, wall), 1),
        "client_cpu_s": round(own, 4),
        "redis_cpu_s": None if srv is None else round(srv, 4),
        "redis_script_s": None if scripts is None else round(scripts / 1e6, 4),
        "us_per_task_client": round(own / done * 1e6, 2) if done else None,
        "us_per_task_redis": round(srv / done * 1e6, 2) if done and srv is not None else None,
    }


T = TypeVar("T")


def measure_call(client: Any, tasks: int, fn: Callable[[], T]) -> tuple[T, dict[str, Any]]:
    """``fn()`` measured as :func:`measure` does, counted as ``tasks``: its value, figures."""
    box: list[T] = []

    def body() -> int:
        box.append(fn())
        return tasks

    figures = measure(client, body)
    return box[0], figures


class OpStats:
    """Per-operation Redis CPU, client CPU and Redis commands (INFO around every call).

    Costs two INFO round trips per call; meaningful on a private server only (Redis CPU is
    the main thread's, where commands and scripts run).
    """

    @staticmethod
    def available(client: Any) -> bool:
        """Whether the server answers the INFO sections this needs (not fakeredis)."""
        try:
            return "used_cpu_user_main_thread" in client.info("cpu")
        except redis.ResponseError:
            return False

    def __init__(self, client: Any) -> None:
        self.client = client
        self.redis_cpu: defaultdict[str, float] = defaultdict(float)
        self.client_cpu: defaultdict[str, float] = defaultdict(float)
        self.calls: dict[str, Counter[str]] = defaultdict(Counter)
        self.usec: dict[str, Counter[str]] = defaultdict(Counter)

    def _snap(self) -> tuple[dict[str, tuple[int, int]], float]:
        stats = self.client.info("commandstats")
        cpu = self.client.info("cpu")
        cmds = {k[8:]: (int(v["calls"]), int(v["usec"])) for k, v in stats.items()}
        main = float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])
        return cmds, main

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with its costs added under ``name``."""

        def call(*args: Any) -> Any:
            before, cpu0 = self._snap()
            c0 = time.process_time()
            out = fn(*args)
            self.client_cpu[name] += time.process_time() - c0
            after, cpu1 = self._snap()
            self.redis_cpu[name] += cpu1 - cpu0
            for cmd, (n, us) in after.items():
                n0, us0 = before.get(cmd, (0, 0))
                if n > n0 and cmd != "info":
                    self.calls[name][cmd] += n - n0
                    self.usec[name][cmd] += us - us0
            return out

        return call

    def result(self, tasks: int) -> dict[str, Any]:
        """Per operation and per task: Redis and client CPU (µs), commands and their µs."""
        out: dict[str, Any] = {}
        if not tasks:
            return out
        for name in self.redis_cpu:
            top = sorted(self.usec[name].items(), key=lambda kv: -kv[1])
            out[name] = {
                "redis_cpu_us": round(self.redis_cpu[name] / tasks * 1e6, 2),
                "client_cpu_us": round(self.client_cpu[name] / tasks * 1e6, 2),
                "commands": {
                    c: [round(self.calls[name][c] / tasks, 4), round(us / tasks, 2)]
                    for c, us in top
                },
            }
        return out
