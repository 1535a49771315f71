"""The shared fixtures themselves: both backends, shared data, prefix cleanup."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

MakeClient = Callable[..., redis.Redis]


def test_clients_share_data_within_a_test(make_client: MakeClient, prefix: str) -> None:
    a = make_client()
    b = make_client(protocol=2)
    a.set(f"{prefix}:k", b"v")
    a.hset(f"{prefix}:h", mapping={"f": "1"})
    assert b.get(f"{prefix}:k") == b"v"
    assert b.hgetall(f"{prefix}:h") == {b"f": b"1"}


def test_decode_responses(make_client: MakeClient, prefix: str) -> None:
    raw = make_client()
    text = make_client(decode_responses=True)
    raw.rpush(f"{prefix}:l", "x", "y")
    assert text.lrange(f"{prefix}:l", 0, -1) == ["x", "y"]
    assert raw.lrange(f"{prefix}:l", 0, -1) == [b"x", b"y"]


def test_r_fixture(r: redis.Redis, backend: str, prefix: str) -> None:
    assert r.ping()
    assert r.incr(f"{prefix}:n") == 1
    if backend == "fake":
        assert type(r).__module__.startswith("fakeredis")
    else:
        assert not type(r).__module__.startswith("fakeredis")


def test_fake_backend_is_fresh_per_test(make_client: MakeClient, backend: str) -> None:
    if backend != "fake":
        pytest.skip("only the fake backend is private to the test")
    assert make_client().dbsize() == 0


def test_run_id_and_prefix(run_id: int, prefix: str) -> None:
    assert 10**9 <= run_id < 2 * 10**9
    assert prefix.startswith("swt") and len(prefix) > 3


def test_real_only(real_only: redis.Redis, request: pytest.FixtureRequest) -> None:
    assert real_only.ping()
    assert request.node.get_closest_marker("real") is not None


INNER_TEST = """
import pathlib

def test_make_keys(make_client, backend, prefix):
    if backend != "real":
        return
    r = make_client()
    r.mset({f"{prefix}:{i}": i for i in range(1200)})
    r.set(f"{prefix}x:outside", 1)   # not under "<prefix>:": must survive
    pathlib.Path(__file__).with_name("prefix.txt").write_text(prefix)
"""


def test_prefix_cleanup_on_real_backend(real_redis_url: str, tmp_path: Path) -> None:
    """Run a small pytest session with this conftest; its keys must be gone afterwards."""
    conftest = Path(__file__).with_name("conftest.py")
    (tmp_path / "conftest.py").write_text(conftest.read_text())
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TEST))
    repo = str(Path(__file__).resolve().parents[1])
    helpers = str(Path(__file__).parent)  # the conftest imports its helper modules (servers)
    pythonpath = os.pathsep.join(filter(None, [repo, helpers, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "REDIS_URL": real_redis_url, "PYTHONPATH": pythonpath}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    inner_prefix = (tmp_path / "prefix.txt").read_text()
    client = redis.Redis.from_url(real_redis_url, protocol=3)
    try:
        assert list(client.scan_iter(match=f"{inner_prefix}:*", count=1000)) == []
        assert client.get(f"{inner_prefix}x:outside") == b"1"
    finally:
        client.delete(f"{inner_prefix}x:outside")
        client.close()
