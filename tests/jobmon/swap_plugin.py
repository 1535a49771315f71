"""pytest plugin: run jobmon's own tests with its SwarmState swapped for swarm_redis.

Loaded into a run of jobmon's test suite with ``-p swap_plugin`` (this folder on PYTHONPATH)
by ``test_jobmon_suite.py``. At load time, before jobmon's test modules import anything, it
replaces ``SwarmState`` in ``jobmon.client.swarm.state`` and ``jobmon.client.swarm.builder``
by :class:`swarm_redis.jobmon.JobmonSwarmState` on the real Redis at ``$SWARM_REDIS_URL``:
jobmon's builder, orchestrator and scheduler, and every unit test that constructs
``SwarmState(...)``, get the Redis state. Every state gets its own key prefix
(``jmswap.<test token>:<tag>.<n>``: jobmon's in-memory states share nothing, even for one
workflow run id) and every key of a test is deleted after it.

``$SWARM_REDIS_SWAP=0`` loads the plugin without swapping (the baseline run).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any
from unittest.mock import NonCallableMock

import pytest
import redis

_SWAP = os.environ.get("SWARM_REDIS_SWAP", "1") != "0"
_URL = os.environ.get("SWARM_REDIS_URL", "redis://127.0.0.1:6379/0")
_client = redis.Redis.from_url(_URL, protocol=3)
_prefix = ["jmswap." + secrets.token_hex(6)]
_patch: Any = None

if _SWAP:
    import swarm_redis.jobmon as sj

    def _install() -> None:
        global _patch
        import jobmon.client.swarm.builder as jbuilder
        import jobmon.client.swarm.state as jstate

        base = sj.JobmonSwarmState
        counter = iter(range(1, 1 << 62))

        class SwarmState(base):  # type: ignore[misc, valid-type]
            """jobmon's SwarmState signature; the state lives in Redis under a fresh prefix."""

            def __init__(
                self,
                workflow_id: int,
                workflow_run_id: int,
                dag_id: int,
                max_concurrently_running: int = 10000,
                status: str = "B",
                **kwargs: Any,
            ) -> None:
                if "redis" not in kwargs:
                    kwargs["redis"] = _client
                    kwargs["prefix"] = f"{_prefix[0]}:{next(counter)}"
                super().__init__(
                    workflow_id,
                    workflow_run_id,
                    dag_id,
                    max_concurrently_running,
                    status,
                    **kwargs,
                )

            def cache_resources(self, resource_hash: int, task_resources: Any) -> Any:
                # jobmon's unit tests cache MagicMock "TaskResources", which no codec can put in
                # Redis: those (and only those) stay in this process (docs/jobmon.md)
                if isinstance(task_resources, NonCallableMock):
                    cache = self.__dict__.setdefault("_mock_cache", {})
                    return cache.setdefault(resource_hash, task_resources)
                return super().cache_resources(resource_hash, task_resources)

            def get_cached_resources(self, resource_hash: int) -> Any:
                cache = self.__dict__.get("_mock_cache", {})
                if resource_hash in cache:
                    return cache[resource_hash]
                return super().get_cached_resources(resource_hash)

        jstate.SwarmState = SwarmState  # type: ignore[misc]
        jbuilder.SwarmState = SwarmState  # type: ignore[attr-defined]
        _patch = SwarmState

    _install()


def _delete(prefix: str) -> None:
    batch: list[Any] = []
    for key in _client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            _client.unlink(*batch)
            batch.clear()
    if batch:
        _client.unlink(*batch)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Any) -> Iterator[None]:
    """A fresh prefix per test; its keys deleted afterwards."""
    _prefix[0] = "jmswap." + secrets.token_hex(6)
    try:
        yield
    finally:
        _delete(_prefix[0])


def pytest_report_header(config: pytest.Config) -> str:
    if _SWAP:
        return f"swarm_redis swap: jobmon SwarmState -> {_patch!r} on {_URL}"
    return "swarm_redis swap: off (baseline)"
