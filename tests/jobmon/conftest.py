"""Session fixtures of the jobmon tests.

* ``jobmon_server``: one local jobmon server (sqlite) for every end-to-end test of the session.
* ``jobmon_background``: the jobmon tests that are one subprocess each (jobmon's unit suite with
  the swap, ``swarm-redis demo --jobmon``) start at the session's first jobmon test when they are
  selected, so that their minutes pass beside the end-to-end tests (which mostly wait on
  jobmon's server); each such test then waits for its subprocess's outcome.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

#: Test (node id suffix) -> module and function that start its subprocess: ``start(redis_url)``
#: returns an object with ``stop()``.
BACKGROUND = {
    "test_jobmon_suite.py::test_unit_suite": ("test_jobmon_suite", "start_unit_suite"),
    "test_jobmon_demo.py::test_demo_runs_a_real_workflow_and_passes_its_verdict": (
        "test_jobmon_demo",
        "start_demo",
    ),
}


@pytest.fixture(scope="session")
def jobmon_server() -> Iterator[Any]:
    from swarm_redis.jobmon.localserver import JobmonServer

    tmp = tempfile.mkdtemp(prefix="swarm-jobmon-")
    with JobmonServer(tmp) as server:
        yield server


@pytest.fixture(scope="session", autouse=True)
def jobmon_background(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    started: dict[str, Any] = {}
    selected = [t for t in BACKGROUND if any(i.nodeid.endswith(t) for i in request.session.items)]
    try:
        for test in selected:
            module, start = BACKGROUND[test]
            try:  # the module was collected, so it imports
                run = getattr(importlib.import_module(module), start)(
                    request.getfixturevalue("real_redis_url")
                )
            except pytest.skip.Exception:  # no Redis or no jobmon source: the test says why
                continue
            started[test.split("::")[-1]] = run
        yield started
    finally:
        for run in started.values():
            run.stop()
