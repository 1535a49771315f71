"""Helpers shared by the CLI tests: a small realistic run, and running the CLI in-process."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from swarm_redis import ArrayRecord, RedisSwarmState, StateUpdate
from swarm_redis.ops.cli import main
from swarm_redis.testing.dags import from_edges


@dataclass
class CliResult:
    """Exit code and captured output of one ``main([...])`` call."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def lines(self) -> list[Any]:
        """NDJSON output (events, watch) as a list of objects."""
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """Run ``swarm-redis ARGS`` in this process and capture what it printed."""
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def cli_for(capsys: pytest.CaptureFixture[str], url: str, prefix: str) -> Callable[..., CliResult]:
    """``cli("status", "7", "--json")``: the CLI against ``url`` under ``prefix``."""

    def run(*args: str) -> CliResult:
        return run_cli(capsys, "--url", url, "--prefix", prefix, *args)

    return run


def build_run(url: str, prefix: str, run_id: int, *, client: Any = None) -> RedisSwarmState:
    """A run of 10 tasks in two arrays, driven a little through the public API.

    DAG: 1 -> 2 -> 3, 1 -> 4; 5 -> 6..10. Tasks 1-5 are in array 1 (limit 3), 6-10 in
    array 2 (limit 2); the workflow limit is 5. Afterwards: 1 DONE (propagated, so 2 and 4
    are ready and queued), 5 RUNNING, the rest REGISTERING; the run is RUNNING. ``client``
    (e.g. a RedisCluster client) replaces a new client for ``url``.
    """
    if client is None:
        client = redis.Redis.from_url(url, protocol=3)
    state = RedisSwarmState(1, run_id, 1, max_concurrently_running=5, redis=client, prefix=prefix)
    edges = [(1, 2), (2, 3), (1, 4), *((5, i) for i in range(6, 11))]
    tasks = {t.task_id: t for t in from_edges(10, edges, arrays=[1] * 5 + [2] * 5)}
    state.add_arrays([ArrayRecord(1, 3), ArrayRecord(2, 2)])
    state.add_tasks(tasks.values())
    state.enqueue_tasks([tasks[1], tasks[5]])
    state.apply_update(StateUpdate(task_statuses={1: "Q", 5: "Q"}, workflow_run_status="R"))
    state.dequeue_tasks(2)
    state.apply_update(StateUpdate(task_statuses={1: "D", 5: "R"}))
    return state


def finish_run(state: RedisSwarmState) -> None:
    """Drive every task of a :func:`build_run` run to DONE."""
    state.dequeue_tasks(100)
    state.apply_update(StateUpdate(task_statuses={i: "D" for i in (2, 4, 5)}))
    state.dequeue_tasks(100)
    state.apply_update(StateUpdate(task_statuses={i: "D" for i in (3, 6, 7, 8, 9, 10)}))
    state.dequeue_tasks(100)
