"""Shared fixtures: every behaviour test runs on in-process fakeredis and on a real Redis.

Fixture API:

* `backend` -- "fake" or "real" (parametrized; the real case carries `pytest.mark.real`).
* `make_client(decode_responses=False, protocol=3, **kw)` -- a new client on the current test's
  backend; all clients of one test share the same data (one `FakeServer`, or the real server).
  Closed at teardown. `r` is `make_client()`.
* `real_redis_url` (session) -- `REDIS_URL` if it answers, else 127.0.0.1:6379 if it answers,
  else a private redis-server from PATH. Without any: skip, or fail when env `CI` is true/1.
* `real_only` -- a client on the real server for tests that must not run on fakeredis
  (races, kills, BUSY); such tests get the `real` marker automatically.
* `fake_server` -- the per-test `fakeredis.FakeServer(version=(7, 0))`.
* `run_id` -- a random int in [10**9, 2*10**9), unique per test.
* `prefix` -- `"swt" + random hex`, unique per test.
* `front` -- "sync" or "async" (parametrized, combined with `backend`): a `fronts.Front` whose
  `state(run_id, prefix=...)` / `attach(...)` give one blocking facade for RedisSwarmState and
  AsyncRedisSwarmState, so one test body covers both fronts (see tests/fronts.py).

Rule: the real server is SHARED (never FLUSHDB/FLUSHALL it). Every key a test creates, directly
or through swarm_redis, must start with `f"{prefix}:"` (pass `prefix` as the key prefix of every
state you build). When the test touched the real server, the `prefix` fixture deletes all keys
matching `f"{prefix}:*"` at teardown (SCAN MATCH + UNLINK in batches), so nothing is left.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from cli_helpers import CliResult, build_run, cli_for
from servers import MakeClient

try:
    import swarm_redis  # noqa: F401
except ImportError:  # a checkout that is not pip-installed: import from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swarm_redis import RedisSwarmState
from swarm_redis.demo.embedded import EmbeddedRedis, EmbeddedRedisError

_DEFAULT_LOCAL_URL = "redis://127.0.0.1:6379/0"
_used_run_ids: set[int] = set()
_used_prefixes: set[str] = set()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def _answers(url: str) -> str | None:
    """None when `url` answers PING, else why not."""
    try:
        client = redis.Redis.from_url(
            url, protocol=3, socket_connect_timeout=1.0, socket_timeout=2.0
        )
    except (ValueError, redis.RedisError) as e:
        return f"{url}: {e}"
    try:
        return None if client.ping() else f"{url}: PING failed"
    except (redis.RedisError, OSError) as e:
        return f"{url}: {type(e).__name__}: {e}"
    finally:
        client.close()


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers (also declared in pyproject.toml) for runs from other rootdirs."""
    config.addinivalue_line("markers", "real: needs a real redis-server")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests that use the real server directly, so `-m "not real"` deselects them."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "real_redis_url" in names or "real_only" in names:
            item.add_marker(pytest.mark.real)


@pytest.fixture(scope="session")
def real_redis_url() -> Iterator[str]:
    """URL of a real Redis server for the whole session (see the module docstring)."""
    reasons: list[str] = []
    env = os.environ.get("REDIS_URL", "").strip()
    if env:
        why = _answers(env)
        if why is None:
            yield env
            return
        reasons.append(f"REDIS_URL={why}")
    why = _answers(_DEFAULT_LOCAL_URL)
    if why is None:
        yield _DEFAULT_LOCAL_URL
        return
    reasons.append(why)
    emb: EmbeddedRedis | None = None
    if shutil.which("redis-server"):
        try:
            emb = EmbeddedRedis(prefer="redis-server").start()
        except EmbeddedRedisError as e:
            reasons.append(f"private redis-server: {e}")
    else:
        reasons.append("no redis-server on PATH")
    if emb is None:
        msg = "no real Redis: " + "; ".join(reasons)
        if _in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        yield emb.url
    finally:
        emb.stop()


@pytest.fixture(
    params=[
        pytest.param("fake", id="fake"),
        pytest.param("real", id="real", marks=pytest.mark.real),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """ "fake" (in-process fakeredis) or "real" (a real redis-server)."""
    value: str = request.param
    return value


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    """A fresh fakeredis server (Redis 7.0 behaviour) for this test."""
    return fakeredis.FakeServer(version=(7, 0))


@pytest.fixture
def make_client(
    backend: str, fake_server: fakeredis.FakeServer, request: pytest.FixtureRequest
) -> Iterator[MakeClient]:
    """Factory of clients that all talk to this test's backend; closed at teardown."""
    url: str | None = request.getfixturevalue("real_redis_url") if backend == "real" else None
    clients: list[redis.Redis] = []

    def make(decode_responses: bool = False, protocol: int = 3, **kw: Any) -> redis.Redis:
        client: redis.Redis
        if url is None:
            client = fakeredis.FakeRedis(
                server=fake_server, decode_responses=decode_responses, protocol=protocol, **kw
            )
        else:
            client = redis.Redis.from_url(
                url, decode_responses=decode_responses, protocol=protocol, **kw
            )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def r(make_client: MakeClient) -> redis.Redis:
    """A bytes, RESP3 client on this test's backend."""
    return make_client()


@pytest.fixture
def real_only(real_redis_url: str) -> Iterator[redis.Redis]:
    """A bytes, RESP3 client on the real server, for tests that fakeredis cannot prove."""
    client = redis.Redis.from_url(real_redis_url, protocol=3)
    yield client
    client.close()


@pytest.fixture
def run_id() -> int:
    """A random workflow-run id in [10**9, 2*10**9), unique within the session."""
    while True:
        value = 10**9 + secrets.randbelow(10**9)
        if value not in _used_run_ids:
            _used_run_ids.add(value)
            return value


def delete_prefix(client: redis.Redis, prefix: str, batch: int = 500) -> int:
    """Delete every key matching `f"{prefix}:*"` (SCAN MATCH + UNLINK); return how many."""
    deleted = 0
    pending: list[Any] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        pending.append(key)
        if len(pending) >= batch:
            deleted += int(client.unlink(*pending))
            pending.clear()
    if pending:
        deleted += int(client.unlink(*pending))
    return deleted


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A unique key prefix; its keys are deleted from the real server at teardown."""
    while True:
        value = "swt" + secrets.token_hex(6)
        if value not in _used_prefixes:
            _used_prefixes.add(value)
            break
    callspec = getattr(request.node, "callspec", None)
    uses_real = (callspec is not None and callspec.params.get("backend") == "real") or (
        "real_redis_url" in request.node.fixturenames
    )
    url: str | None = request.getfixturevalue("real_redis_url") if uses_real else None
    yield value
    if url is not None:
        client = redis.Redis.from_url(url, protocol=3)
        try:
            delete_prefix(client, value)
        finally:
            client.close()


@pytest.fixture(params=["sync", "async"])
def front(
    request: pytest.FixtureRequest, backend: str, fake_server: fakeredis.FakeServer
) -> Iterator[Any]:
    """A `fronts.Front` ("sync" or "async") on this test's backend; see tests/fronts.py."""
    from fronts import Front

    url: str | None = request.getfixturevalue("real_redis_url") if backend == "real" else None
    made = Front(request.param, url=url, fake_server=None if url else fake_server)
    yield made
    made.close()


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    """A private 3-primary Redis Cluster for the whole session (started once, stopped at the end)."""
    from servers import LocalCluster, missing_binaries, skip_or_fail

    why = missing_binaries("redis-server")
    if why:
        skip_or_fail(f"Redis Cluster tests need redis-server: {why}")
    made = LocalCluster(3).start()
    try:
        yield made
    finally:
        made.stop()


# --- the CLI tests' run and command runner (test_cli*.py; a module with another ``state`` or
# ``cli`` defines its own, which takes precedence) ----------------------------------------------


@pytest.fixture
def state(real_redis_url: str, prefix: str, run_id: int) -> RedisSwarmState:
    """A small run on the real server (see cli_helpers.build_run)."""
    return build_run(real_redis_url, prefix, run_id)


@pytest.fixture
def cli(
    real_redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> Callable[..., CliResult]:
    """``cli("status", "7", "--json")`` runs the CLI against this test's server and prefix."""
    return cli_for(capsys, real_redis_url, prefix)
