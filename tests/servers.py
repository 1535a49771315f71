"""Private multi-process Redis setups for the scale-out tests: a local Cluster and a Sentinel group.

Both are built from `swarm_redis.demo.redis_server.start_redis_server` (foreground children tied to our
life, temp dirs), on free loopback ports, and stopped in `stop()` (nothing is left running).

* `LocalCluster(n)`: n primaries, slots split evenly with CLUSTER ADDSLOTSRANGE, joined with
  CLUSTER MEET; ready when every node says `cluster_state:ok` (about 2 s: Redis waits
  CLUSTER_WRITABLE_DELAY before a new primary takes writes).
* `SentinelGroup()`: one primary, one replica and three sentinels monitoring it as
  `master_name`, with short `down-after-milliseconds` and `failover-timeout`.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from swarm_redis.demo.embedded import EmbeddedRedis, EmbeddedRedisError, free_port
from swarm_redis.demo.redis_server import RedisProcess, start_redis_server
from swarm_redis.engine.keys import RunKeys

#: The ``make_client`` fixture's type: builds a client of the test's backend.
MakeClient = Callable[..., redis.Redis]

CLUSTER_SLOTS = 16384


def missing_binaries(*names: str) -> str | None:
    """Why the setup cannot run here (a binary missing from PATH), or None."""
    absent = [n for n in names if shutil.which(n) is None]
    return f"{', '.join(absent)} not on PATH" if absent else None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 < 65536 and _port_free(port + 10000):
            return port


def wait_until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """Poll `check` until it holds; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


class LocalCluster:
    """A Redis Cluster of `n` primaries on loopback (no replicas)."""

    def __init__(self, n: int = 3) -> None:
        self.n = n
        self.dir = tempfile.mkdtemp(prefix="swarm-cluster-")
        self.nodes: list[RedisProcess] = []

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", p) for p in self.ports]

    def start(self, timeout: float = 20.0) -> LocalCluster:
        """Start the nodes, assign the slots, join them and wait for `cluster_state:ok`."""
        try:
            for i in range(self.n):
                port = cluster_port()
                self.nodes.append(
                    start_redis_server(
                        [
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            "nodes.conf",
                            "--cluster-node-timeout",
                            "2000",
                            "--maxmemory-policy",
                            "noeviction",
                        ],
                        workdir=str(Path(self.dir, f"node{i}")),
                        port=port,
                    )
                )
            clients = [node.client() for node in self.nodes]
            try:
                step = CLUSTER_SLOTS // self.n
                for i, c in enumerate(clients):
                    last = CLUSTER_SLOTS - 1 if i == self.n - 1 else (i + 1) * step - 1
                    c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
                for port in self.ports[1:]:
                    clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)

                def ready() -> bool:
                    for c in clients:
                        info = c.execute_command("CLUSTER", "INFO")
                        text = info.decode() if isinstance(info, bytes) else str(info)
                        if (
                            "cluster_state:ok" not in text
                            or f"cluster_known_nodes:{self.n}" not in text
                        ):
                            return False
                    return True

                wait_until(ready, timeout, "cluster_state:ok on every node")
            finally:
                for c in clients:
                    c.close()
        except BaseException:
            self.stop()
            raise
        return self

    def client(self, **kw: Any) -> redis.cluster.RedisCluster:
        """A sync RedisCluster client (RESP3 by default)."""
        import redis.cluster

        kw.setdefault("protocol", 3)
        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in self.startup_nodes], **kw
        )

    def async_client(self, **kw: Any) -> Any:
        """A `redis.asyncio.cluster.RedisCluster` client (RESP3 by default)."""
        import redis.asyncio.cluster

        kw.setdefault("protocol", 3)
        return redis.asyncio.cluster.RedisCluster(
            startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in self.startup_nodes],
            **kw,
        )

    def stop(self) -> None:
        """Stop every node and remove the temp dir."""
        for node in self.nodes:
            node.stop()
        self.nodes.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


SENTINEL_CONF = """\
port {port}
bind 127.0.0.1
sentinel monitor {name} 127.0.0.1 {primary} 2
sentinel down-after-milliseconds {name} {down_after}
sentinel failover-timeout {name} {failover_timeout}
sentinel parallel-syncs {name} 1
"""


class SentinelGroup:
    """A primary, a replica and three sentinels watching them as `master_name`."""

    def __init__(
        self, master_name: str = "swarm", down_after_ms: int = 600, failover_timeout_ms: int = 3000
    ) -> None:
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.dir = tempfile.mkdtemp(prefix="swarm-sentinel-")
        self.primary: RedisProcess | None = None
        self.replica: RedisProcess | None = None
        self.sentinels: list[RedisProcess] = []

    @property
    def sentinel_addrs(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def start(self, timeout: float = 20.0) -> SentinelGroup:
        """Start everything and wait until the replica is in sync and every sentinel knows it."""
        try:
            # No diskless-sync delay (5 s by default): the replica syncs at once.
            common = ["--maxmemory-policy", "noeviction", "--repl-diskless-sync-delay", "0"]
            self.primary = start_redis_server(common, workdir=str(Path(self.dir, "primary")))
            self.replica = start_redis_server(
                [*common, "--replicaof", "127.0.0.1", str(self.primary.port)],
                workdir=str(Path(self.dir, "replica")),
            )
            for i in range(3):
                work = Path(self.dir, f"sentinel{i}")
                work.mkdir(parents=True)
                port = free_port()
                conf = work / "sentinel.conf"
                conf.write_text(
                    SENTINEL_CONF.format(
                        port=port,
                        name=self.master_name,
                        primary=self.primary.port,
                        down_after=self.down_after_ms,
                        failover_timeout=self.failover_timeout_ms,
                    )
                )
                self.sentinels.append(
                    start_redis_server([str(conf), "--sentinel"], workdir=str(work), port=port)
                )
            replica = self.replica.client(decode_responses=True)
            try:
                wait_until(
                    lambda: replica.info("replication").get("master_link_status") == "up",
                    timeout,
                    "the replica to sync",
                )
            finally:
                replica.close()
            for s in self.sentinels:
                sc = s.client(decode_responses=True)
                try:

                    def knows_all(sc: redis.Redis = sc) -> bool:
                        return (
                            len(sc.execute_command("SENTINEL", "REPLICAS", self.master_name)) == 1
                            and len(sc.execute_command("SENTINEL", "SENTINELS", self.master_name))
                            == 2
                        )

                    wait_until(
                        knows_all,
                        timeout,
                        "every sentinel to know the replica and the other sentinels",
                    )
                finally:
                    sc.close()
        except BaseException:
            self.stop()
            raise
        return self

    def master_port(self) -> int:
        """The primary's port as the first sentinel reports it now."""
        sc = self.sentinels[0].client(decode_responses=True)
        try:
            _host, port = sc.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
            )
            return int(port)
        finally:
            sc.close()

    def sentinel(self, **kw: Any) -> Any:
        """A redis-py `Sentinel` over the three sentinels."""
        from redis.sentinel import Sentinel

        kw.setdefault("protocol", 3)
        return Sentinel(self.sentinel_addrs, socket_timeout=1.0, **kw)

    def async_sentinel(self, **kw: Any) -> Any:
        """A `redis.asyncio.sentinel.Sentinel` over the three sentinels."""
        from redis.asyncio.sentinel import Sentinel

        kw.setdefault("protocol", 3)
        return Sentinel(self.sentinel_addrs, socket_timeout=1.0, **kw)

    def master_client(self, is_async: bool = False) -> Any:
        """A client of the current primary, found (and re-found after failover) via Sentinel."""
        sentinel = self.async_sentinel() if is_async else self.sentinel()
        return sentinel.master_for(self.master_name, protocol=3)

    def stop(self) -> None:
        """Stop the sentinels first (no failover during teardown), then the data servers."""
        for s in self.sentinels:
            s.stop()
        self.sentinels.clear()
        for node in (self.replica, self.primary):
            if node is not None:
                with contextlib.suppress(Exception):
                    node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def in_ci() -> bool:
    """True when env CI asks for real-server tests to fail instead of skipping."""
    import os

    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def skip_or_fail(reason: str) -> None:
    """Skip the test (or fail it under CI=true) because its servers cannot run here."""
    import pytest

    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def primary_of(client: Any, key: str) -> str:
    """The name ("host:port") of the primary that serves the key's slot."""
    node = client.get_node_from_key(key)
    assert node is not None
    return str(node.name)


def runs_on_every_primary(client: Any, prefix: str, per_primary: int) -> dict[int, str]:
    """Run ids chosen so that every primary hosts ``per_primary`` of them: id -> primary."""
    primaries = {n.name for n in client.get_primaries()}
    chosen: dict[int, str] = {}
    load = dict.fromkeys(primaries, 0)
    candidate = 10**9 + secrets.randbelow(10**6)
    while min(load.values()) < per_primary:
        candidate += 1
        where = primary_of(client, RunKeys(prefix, candidate).meta)
        if load[where] < per_primary:
            load[where] += 1
            chosen[candidate] = where
    return chosen


@contextlib.contextmanager
def private_redis(why: str) -> Iterator[redis.Redis]:
    """A redis-server of the caller's alone (bytes, RESP3), stopped on exit; skipped (failed
    under CI=true) without redis-server on PATH, ``why`` saying what needs it."""
    import pytest

    if shutil.which("redis-server") is None:
        skip_or_fail(f"{why} needs redis-server on PATH")
    try:
        emb = EmbeddedRedis(prefer="redis-server").start()
    except EmbeddedRedisError as e:  # pragma: no cover - environment
        pytest.fail(f"private redis-server: {e}")
    client = redis.Redis.from_url(emb.url, protocol=3)
    try:
        yield client
    finally:
        client.close()
        emb.stop()
