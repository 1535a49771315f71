"""One demo run, from connecting to the verdict; :meth:`Demo.cleanup` stops all it started.

:class:`Demo` connects, registers the DAG, starts the simulated server and the replica pool,
drives the live view while it kills replicas, waits for the leader to finalize and fills the
verdict. ``--role seed`` and ``--role sim`` run its single parts for docker-compose.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from swarm_redis.demo.dag import STEP_S, build_dag, register_run, sim_config
from swarm_redis.demo.embedded import EmbeddedRedis, connect, resolve_url
from swarm_redis.demo.pool import LEASE_S, ReplicaPool, replica_command
from swarm_redis.demo.sim import AUTHKEY_ENV, SimConfig, SimReport, SimServer
from swarm_redis.demo.verdict import (
    DemoResult,
    fill_drift,
    fill_from_report,
    fill_from_snapshot,
)
from swarm_redis.demo.view import LiveView
from swarm_redis.engine.keys import RunKeys
from swarm_redis.errors import InvalidInputError, UnknownRunError
from swarm_redis.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from swarm_redis.ops.reads import read_snapshot, scan_keys
from swarm_redis.state import RedisSwarmState

__all__ = ["Demo", "Settings", "Terminated", "sigterm_unwinds", "url_word"]

#: The first kill comes after ``--kill-every`` seconds or at this share of final tasks,
#: whichever is first, so that even a short demo shows a failover.
FIRST_KILL_SHARE = 0.3


# --- signals and cleanup ------------------------------------------------------------------------


class Terminated(BaseException):
    """SIGTERM arrived: unwind like KeyboardInterrupt so every finally block runs."""


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while the demo runs (main thread only)."""
    if not _main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM while cleaning up, so a second Ctrl-C cannot cut it short."""
    if not _main_thread():
        yield
        return
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _purge(client: Any, prefix: str, run_id: int) -> int:
    """Delete every key of the run; how many."""
    keys = list(scan_keys(client, RunKeys(prefix, run_id).match_all))  # prefix escaped
    for start in range(0, len(keys), 500):
        client.unlink(*keys[start : start + 500])
    return len(keys)


def url_word(url: str, given: str | None) -> str:
    """``url`` as a shell word for a printed command line, its password never shown.

    A URL with a password becomes ``"$REDIS_URL"`` when it came from that variable (the command
    then works as printed in the same shell), else the URL with ``***`` for the credentials.
    """
    if urllib.parse.urlsplit(url).password is None:
        return shlex.quote(url)
    if given is None and os.environ.get("REDIS_URL", "").strip() == url:
        return '"$REDIS_URL"'
    return shlex.quote(_redact(url))


def _redact(url: str) -> str:
    """The URL without a password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


# --- the demo -----------------------------------------------------------------------------------


@dataclass
class Settings:
    tasks: int
    replicas: int
    kill_every: float
    shape: str
    fail_rate: float
    limit: int
    seed: int | None
    url: str | None
    prefix: str
    run: int | None
    json: bool
    timeout: float
    purge: bool
    role: str
    listen: str
    max_attempts: int


class Demo:
    """One demo run: owns everything it starts, and stops all of it in :meth:`cleanup`."""

    def __init__(self, s: Settings, say: Callable[[str], None], err: IO[str]) -> None:
        self.s = s
        self.say = say
        self.err = err
        self.embedded: EmbeddedRedis | None = None
        self.client: Any = None
        self.sim: SimServer | None = None
        self.pool: ReplicaPool | None = None
        self.logdir: Path | None = None
        self.view: LiveView | None = None
        self.rng = random.Random(s.seed)

    # each step ---------------------------------------------------------------------------------

    def connect(self) -> tuple[str, str]:
        url, emb = resolve_url(self.s.url)
        self.embedded = emb
        backend = emb.backend if emb is not None else "external"
        where = f"private {emb.backend} at {emb.url}" if emb is not None else _redact(url)
        self.say(f"backend: {backend} ({where})")
        if emb is not None and emb.backend == "fakeredis":
            self.say(
                "  (no redis-server on PATH: fakeredis in this process, about 25x slower "
                "than Redis and without persistence; install redis-server for the real thing)"
            )
        self.client = connect(url, decode_responses=True, protocol=3)
        self.client.ping()
        return url, backend

    def run_id(self) -> int:
        if self.s.run is not None:
            return self.s.run
        return 10**6 + secrets.randbelow(9 * 10**6)

    def start_sim(self, config: SimConfig, host: str = "127.0.0.1", port: int = 0) -> SimServer:
        self.sim = SimServer.start(config, host=host, port=port, authkey=_sim_key())
        self.say(f"simulated server: pid {self.sim.pid} on {self.sim.address}")
        return self.sim

    def cleanup(self) -> None:
        """Stop replicas, the simulated server and the private Redis; remove the temp dir."""
        with _signals_blocked():
            if self.view is not None:
                self.view.close()
            if self.pool is not None:
                self.pool.stop()
            if self.sim is not None:
                with contextlib.suppress(Exception):
                    self.sim.stop()
            if self.client is not None:
                with contextlib.suppress(Exception):
                    self.client.close()
            if self.embedded is not None:
                self.embedded.stop()
            if self.logdir is not None:
                shutil.rmtree(self.logdir, ignore_errors=True)
                self.logdir = None

    # the whole demo ----------------------------------------------------------------------------

    def new_result(self, backend: str, run_id: int, replicas: int, limit: int) -> DemoResult:
        s = self.s
        return DemoResult(
            backend=backend,
            run=run_id,
            prefix=s.prefix,
            shape=s.shape,
            replicas=replicas,
            limit=limit,
            fail_rate=s.fail_rate,
        )

    def run_all(self, result_box: list[DemoResult]) -> int:
        s = self.s
        url, backend = self.connect()
        run_id = self.run_id()
        keys = RunKeys(s.prefix, run_id)
        if self.client.exists(keys.meta):
            self.say(f"run {run_id} already exists under prefix {s.prefix!r}: pick another --run")
            return EXIT_USAGE
        result = self.new_result(backend, run_id, s.replicas, s.limit)
        result_box.append(result)
        dag = build_dag(s.tasks, s.shape, limit=s.limit, seed=s.seed)
        self.say(f"DAG: {dag.describe()}")
        t0 = time.monotonic()
        register_run(self.client, s.prefix, run_id, dag, s.limit)
        self.say(f"registered run {run_id} (prefix {s.prefix}) in {time.monotonic() - t0:.2f} s")
        sim = self.start_sim(sim_config(dag, s.limit, s.fail_rate, s.seed, s.max_attempts))

        self.logdir = Path(tempfile.mkdtemp(prefix="swarm-redis-demo-"))
        env = {**os.environ, AUTHKEY_ENV: sim.authkey_hex}
        self.pool = pool = ReplicaPool(
            replica_command(url, s.prefix, run_id, sim.address), env, self.logdir
        )
        start = time.monotonic()
        for _ in range(s.replicas):
            pool.start_one()
        self.say(
            f"started {s.replicas} replicas (pids {', '.join(map(str, pool.pids))})"
            + (f"; killing one every {s.kill_every:g} s" if s.kill_every > 0 else "")
        )
        if self._drive(result, keys, start):
            self._await_exit(keys, pool)
        result.seconds = round(time.monotonic() - start, 2)
        pool.stop()
        result.replica_crashes = len(pool.crashes)
        result.kills = pool.kills
        self._finish(result, keys, sim.stop(), dag.upstreams)
        for serial, code in pool.crashes[:3]:
            self.say(f"replica {serial} exited with status {code}; log tail:")
            self.say(pool.log_tail(serial))
        if s.purge and self.embedded is None:
            self.say(f"purged {_purge(self.client, s.prefix, run_id)} keys of run {run_id}")
        elif self.embedded is None:
            cli = f"swarm-redis --url {url_word(url, s.url)} --prefix {shlex.quote(s.prefix)}"
            self.say(
                f"run {run_id} kept under prefix {s.prefix!r}: inspect with "
                f"`{cli} status {run_id}`, remove with `{cli} purge {run_id} --yes`"
            )
        return EXIT_OK if result.ok else EXIT_FAILED

    def _drive(self, result: DemoResult, keys: RunKeys, start: float) -> bool:
        """Show the live view and kill replicas until the run ends; False on timeout.

        The run ends when every task is final or the leader gave it a terminal status (a run
        with a task that failed for good ends in ERROR, its downstreams never run).
        """
        s = self.s
        pool = self.pool
        assert pool is not None
        tty = not s.json and sys.stdout.isatty()
        self.view = view = LiveView(self.err if s.json else sys.stdout, tty=tty)
        next_kill = start + s.kill_every if s.kill_every > 0 else math.inf
        deadline = start + s.timeout
        with view:
            while True:
                snap = read_snapshot(self.client, keys)
                fill_from_snapshot(result, snap)
                now = time.monotonic()
                result.seconds = round(now - start, 2)
                result.kills = pool.kills
                if snap.all_final or snap.terminal:
                    view.update(snap, alive=pool.alive(), wanted=s.replicas, kills=pool.kills)
                    return True
                if now >= deadline:
                    result.timed_out = True
                    return False
                for gone in pool.collect_exited():
                    self.say(f"replica {gone.serial} exited by itself ({gone.proc.returncode})")
                while pool.alive() < s.replicas:
                    pool.start_one()
                finished = snap.counts["D"] + snap.counts["F"]
                early = pool.kills == 0 and finished >= FIRST_KILL_SHARE * snap.tasks
                if now >= next_kill or (s.kill_every > 0 and early):
                    pid = pool.kill_random(self.rng)
                    pool.start_one()
                    next_kill = now + s.kill_every
                    if not view.tty:
                        self.say(f"killed replica pid {pid} (SIGKILL), started a replacement")
                view.update(snap, alive=pool.alive(), wanted=s.replicas, kills=pool.kills)
                time.sleep(0.2)

    def _await_exit(self, keys: RunKeys, pool: ReplicaPool) -> None:
        """Wait (bounded) for the leader to finalize the run and every replica to leave."""
        grace = time.monotonic() + max(5.0, 4 * LEASE_S)
        while time.monotonic() < grace:
            if read_snapshot(self.client, keys).terminal and pool.alive() == 0:
                return
            time.sleep(0.1)

    def _finish(
        self,
        result: DemoResult,
        keys: RunKeys,
        report: SimReport | None,
        upstreams: Mapping[int, Sequence[int]],
    ) -> None:
        """Fill the verdict from Redis, the server's final report and the checker."""
        fill_from_snapshot(result, read_snapshot(self.client, keys))
        if report is not None:
            fill_from_report(result, report, self.client, keys, upstreams)
        else:
            result.sim_problems.append("the simulated server died before its final report")
        fill_drift(result, self.client, keys)

    # parts for docker-compose --------------------------------------------------------------------

    def run_seed(self) -> int:
        s = self.s
        self.connect()
        run_id = self.run_id()
        dag = build_dag(s.tasks, s.shape, limit=s.limit, seed=s.seed)
        register_run(self.client, s.prefix, run_id, dag, s.limit)
        self.say(f"registered run {run_id} (prefix {s.prefix}): {dag.describe()}")
        return EXIT_OK

    def run_sim(self, result_box: list[DemoResult]) -> int:
        s = self.s
        if s.run is None:
            self.say("--role sim needs --run")
            return EXIT_USAGE
        host, _, port = s.listen.rpartition(":")
        if (
            host.strip("[]") not in ("127.0.0.1", "localhost", "::1")
            and not os.environ.get(AUTHKEY_ENV, "").strip()
        ):
            self.say(f"--listen {s.listen} is not loopback: set {AUTHKEY_ENV} (hex, >= 16 bytes)")
            return EXIT_USAGE
        _, backend = self.connect()
        keys = RunKeys(s.prefix, s.run)
        try:
            state = RedisSwarmState.attach(self.client, s.run, prefix=s.prefix)
        except UnknownRunError:
            self.say(f"run {s.run} not found under prefix {s.prefix!r}: seed it first")
            return EXIT_USAGE
        config = SimConfig.from_state(
            state,
            step_s=STEP_S,
            fail_rate=s.fail_rate,
            max_attempts=s.max_attempts,
            seed=s.seed,
        )
        sim = self.start_sim(config, host or "127.0.0.1", int(port or 0))
        result = self.new_result(backend, s.run, 0, config.workflow_limit)
        result_box.append(result)
        start = time.monotonic()
        while not read_snapshot(self.client, keys).terminal:
            if time.monotonic() - start >= s.timeout:
                result.timed_out = True
                break
            time.sleep(0.5)
        result.seconds = round(time.monotonic() - start, 2)
        self._finish(result, keys, sim.stop(), config.upstreams)
        return EXIT_OK if result.ok else EXIT_FAILED


def _sim_key() -> bytes:
    """The simulated server's authkey: ``SWARM_SIM_AUTHKEY`` (hex) if set, else random."""
    env = os.environ.get(AUTHKEY_ENV, "").strip()
    if not env:
        return secrets.token_bytes(16)
    try:
        return bytes.fromhex(env)
    except ValueError:
        raise InvalidInputError(f"{AUTHKEY_ENV} must be hex (e.g. openssl rand -hex 16)") from None
