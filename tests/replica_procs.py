"""Shared by the process tests (chaos, faults, signals): replica OS processes, a random layered DAG.

:class:`ReplicaProcs` starts ``python -m swarm_redis.replica`` processes against a simulated
server, each writing its log and its JSON result to its own files, and kills, collects and
reports on them. :func:`layered_dag` is the DAG those tests run: each task after 1-3 random
tasks of the layer before, the same DAG for the same random generator.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm_redis import TaskRecord
from swarm_redis.demo.sim import AUTHKEY_ENV, SimServer
from swarm_redis.testing.dags import random_layered, upstreams_of


def interruptible() -> None:
    """``preexec_fn`` of a child that a test stops with SIGINT: SIGINT back to its default, so
    Python raises KeyboardInterrupt there even when the test run ignores SIGINT (a background
    job of a non-interactive shell starts with SIGINT ignored, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Dag:
    """A layered DAG: its tasks by id, the ids of each layer, each task's upstream ids."""

    tasks: dict[int, TaskRecord]
    layers: list[list[int]]
    upstreams: dict[int, list[int]]


def layered_dag(rng: random.Random, n_layers: int, width: int, n_arrays: int) -> Dag:
    """Tasks 1..n_layers * width, each after 1-3 of the layer before; task t in array
    1 + t % n_arrays."""
    tasks = random_layered(rng, n_layers, width, n_arrays=n_arrays)
    ids = [t.task_id for t in tasks]
    layers = [ids[i : i + width] for i in range(0, len(ids), width)]
    return Dag({t.task_id: t for t in tasks}, layers, upstreams_of(tasks))


class ReplicaProcs:
    """Replica processes of one run, named r0, r1, ... in start order.

    Args:
        url: Redis URL the replicas use.
        prefix: Key prefix of the run.
        run_id: The run.
        sim: The simulated server they talk to.
        logs: Directory of their ``<name>.out`` (JSON result) and ``<name>.err`` (log) files.
        options: More ``python -m swarm_redis.replica`` options (``--ttl``, ``--poll`` ...).
    """

    def __init__(
        self, url: str, prefix: str, run_id: int, sim: SimServer, logs: Path, *options: str
    ) -> None:
        self.args = [
            *("--url", url, "--prefix", prefix, "--run", str(run_id), "--sim", sim.address),
            *options,
            *("--log-level", "INFO", "--json"),
        ]
        self.env = dict(os.environ, **{AUTHKEY_ENV: sim.authkey_hex})
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: list[str] = []

    def start(self) -> str:
        """Start one more replica; its name."""
        name = f"r{len(self.procs)}"
        with (
            open(self.logs / f"{name}.out", "wb") as out,
            open(self.logs / f"{name}.err", "wb") as err,
        ):
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "swarm_redis.replica", *self.args, "--replica-id", name],
                stdout=out,
                stderr=err,
                env=self.env,
            )
        return name

    def alive(self) -> list[str]:
        """Names of the replicas still running."""
        return [n for n, p in self.procs.items() if p.poll() is None]

    def kill(self, name: str) -> None:
        """SIGKILL one replica and reap it."""
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()
        self.killed.append(name)

    def kill_all(self) -> None:
        """SIGKILL every replica still running (test cleanup)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def results(self) -> dict[str, dict[str, Any]]:
        """Each replica's JSON result (the last line of its stdout), if it printed one."""
        out = {}
        for name in self.procs:
            lines = (self.logs / f"{name}.out").read_text().splitlines()
            if lines:
                out[name] = json.loads(lines[-1])
        return out

    def tail(self, lines: int = 25) -> str:
        """The last lines of every replica's log, with its exit status."""
        parts = []
        for name, proc in self.procs.items():
            err = (self.logs / f"{name}.err").read_text().splitlines()[-lines:]
            parts.append(f"--- {name} (rc={proc.returncode})\n" + "\n".join(err))
        return "\n".join(parts)
