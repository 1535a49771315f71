"""Fixtures of the jobmon tests.

* ``jobmon_server`` (session): one local jobmon server (sqlite) for every end-to-end test.
* ``background_run``: the subprocess of a test that is one subprocess (jobmon's unit suite with
  the swap). When the session's jobmon server starts (the first end-to-end test), the selected
  ones that have not run yet start beside it, so that their minute passes while the end-to-end
  tests mostly wait on jobmon's server; the test then waits for the one already started, or
  starts its own. (``swarm-redis demo --jobmon`` is not run so: beside the end-to-end tests it
  slowed them by as much as it saved.)
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

#: Test name -> module and function that start its subprocess: ``start(redis_url)`` returns an
#: object with ``stop()``.
BACKGROUND = {
    "test_unit_suite": ("test_jobmon_suite", "start_unit_suite"),
}
_started: dict[str, Any] = {}  # started beside the end-to-end tests, not yet claimed
_claimed: set[str] = set()  # tests that took (or started) their subprocess


def _start(name: str, redis_url: str) -> Any:
    module, start = BACKGROUND[name]
    return getattr(importlib.import_module(module), start)(redis_url)


@pytest.fixture(scope="session")
def jobmon_server(request: pytest.FixtureRequest) -> Iterator[Any]:
    from swarm_redis.jobmon.localserver import JobmonServer

    tmp = tempfile.mkdtemp(prefix="swarm-jobmon-")
    with JobmonServer(tmp) as server:
        names = {item.name for item in request.session.items}
        for name in BACKGROUND:
            if name in names and name not in _claimed:
                try:  # its module was collected, so it imports
                    _started[name] = _start(name, request.getfixturevalue("real_redis_url"))
                except pytest.skip.Exception:  # no Redis or no jobmon source: the test says why
                    pass
        try:
            yield server
        finally:
            for run in _started.values():
                run.stop()
            _started.clear()


@pytest.fixture()
def background_run(request: pytest.FixtureRequest, real_redis_url: str) -> Iterator[Any]:
    name = request.node.name
    _claimed.add(name)
    run = _started.pop(name, None) or _start(name, real_redis_url)
    try:
        yield run
    finally:
        run.stop()
