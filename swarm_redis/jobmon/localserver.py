"""A local jobmon server on sqlite in a subprocess, started as jobmon's own test fixtures do
(for the end-to-end tests and ``swarm-redis demo --jobmon``; not for production).

``JobmonServer(tmp_dir)`` sets jobmon's configuration in ``os.environ`` (inherited by every
process started afterwards: replicas, distributors, worker nodes) until it stops, initialises
the database, starts uvicorn on a free port and waits for ``/health``. jobmon's server loggers are set to
``log_level`` (WARNING: jobmon logs every request at INFO, which slows a small machine). Each
response is sent once its request's database commit is done (``ReplyAfterCommit`` in the
server script): jobmon's routes commit after their response would otherwise have gone out.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from typing import Any

import requests

__all__ = ["JobmonServer", "free_port", "jobmon_env"]

_SERVER = """
import os
import sys
from jobmon.server.web.db import init_db
init_db()
import sqlite3
# WAL: readers (syncs, the test's sampler) never block the server's writers
_uri = os.environ["JOBMON__DB__SQLALCHEMY_DATABASE_URI"]
sqlite3.connect(_uri[len("sqlite:///"):]).execute("PRAGMA journal_mode=WAL").close()
import logging
import uvicorn
from jobmon.server.web.api import get_app
app = get_app(versions=["v3"])


# jobmon's routes commit their session in a FastAPI dependency whose exit runs after the
# response is sent, so a client's next request could read the state before that commit
# (jobmon's distributor: "Cannot transition ... from B to O", the run stuck INSTANTIATED).
# Each response is held until the route's call, commit included, has returned.
class ReplyAfterCommit:
    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        held = []

        async def hold(message):
            held.append(message)

        await self.inner(scope, receive, hold)
        for message in held:
            await send(message)


# jobmon's server logs every request at INFO: on a small machine that costs the tests' pace
_level = getattr(logging, sys.argv[2])
for _name in ["jobmon", *logging.root.manager.loggerDict]:
    if _name.startswith("jobmon"):
        logging.getLogger(_name).setLevel(_level)
uvicorn.run(ReplyAfterCommit(app), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jobmon_env(db_path: str, port: int) -> dict[str, str]:
    """jobmon's configuration for a local test server (the values of jobmon's conftest)."""
    return {
        "JOBMON__DB__SQLALCHEMY_DATABASE_URI": f"sqlite:////{db_path.lstrip('/')}",
        "JOBMON__DB__SQLALCHEMY_CONNECT_ARGS": "{}",
        "JOBMON__AUTH__ENABLED": "false",
        "JOBMON__HTTP__ROUTE_PREFIX": "/api/v3",
        "JOBMON__HTTP__SERVICE_URL": f"http://127.0.0.1:{port}",
        "JOBMON__SESSION__SECRET_KEY": "test",
        "JOBMON__HTTP__STOP_AFTER_DELAY": "20",
        "JOBMON__DISTRIBUTOR__POLL_INTERVAL": "1",
        "JOBMON__HEARTBEAT__WORKFLOW_RUN_INTERVAL": "1",
        "JOBMON__HEARTBEAT__TASK_INSTANCE_INTERVAL": "3",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    }


class JobmonServer:
    """A jobmon server process and its sqlite database (see the module docstring)."""

    def __init__(self, tmp_dir: str, *, log_level: str = "WARNING") -> None:
        self.db_path = os.path.join(tmp_dir, "jobmon.sqlite")
        self.port = free_port()
        self.env = jobmon_env(self.db_path, self.port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(tmp_dir, "server.log")
        self.log_level = log_level.upper()
        self.proc: subprocess.Popen[bytes] | None = None
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> JobmonServer:
        self._saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _SERVER, str(self.port), self.log_level],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{self.url}/api/v3/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                with open(self.log_path) as f:
                    raise RuntimeError(f"jobmon server did not start:\n{f.read()[-3000:]}")
            time.sleep(0.3)

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.proc is not None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            for key, value in self._saved.items():  # jobmon's configuration as it was
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the server's database (read-only connection)."""
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return list(con.execute(sql, params).fetchall())
        finally:
            con.close()
