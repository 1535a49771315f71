"""Session fixtures of the jobmon tests.

* ``jobmon_server``: one local jobmon server (sqlite) for every end-to-end test of the session.
* ``jobmon_unit_suite``: jobmon's own unit tests with the swap (``test_jobmon_suite.py::
  test_unit_suite``), started at the session's first jobmon test when that test is selected, so
  that the minute it takes passes beside the end-to-end tests (which mostly wait on jobmon's
  server); the test then waits for its outcome.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

UNIT_SUITE_TEST = "test_jobmon_suite.py::test_unit_suite"


@pytest.fixture(scope="session")
def jobmon_server() -> Iterator[Any]:
    from swarm_redis.jobmon.localserver import JobmonServer

    tmp = tempfile.mkdtemp(prefix="swarm-jobmon-")
    with JobmonServer(tmp) as server:
        yield server


@pytest.fixture(scope="session", autouse=True)
def jobmon_unit_suite(request: pytest.FixtureRequest) -> Iterator[Any]:
    if not any(item.nodeid.endswith(UNIT_SUITE_TEST) for item in request.session.items):
        yield None
        return
    from test_jobmon_suite import UNIT, SuiteRun  # imported: the test was collected

    try:
        run = SuiteRun(UNIT, request.getfixturevalue("real_redis_url"))
    except pytest.skip.Exception:  # no Redis or no jobmon source: test_unit_suite says why
        yield None
        return
    try:
        yield run
    finally:
        run.stop()
