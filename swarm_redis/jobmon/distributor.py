"""Exactly one jobmon distributor per shared run, restarted by the leader when it dies.

jobmon runs one distributor process per ``workflow.run()`` (``python -m jobmon.distributor.cli
start``), tied to the process that runs the workflow. With several replicas the distributor
must outlive any one of them, and there must never be two (two would launch the same queued
task instances twice). So its life is a lease in Redis, independent of the replicas:

* the key ``distributor`` holds ``<token>|<host>|<pid>|<state>`` with a TTL (Redis' own expiry:
  no client clock decides);
* the leader, when it finds no lease and the run is not over, claims one (``SET NX``, with a
  generous start-up TTL) and starts a **supervisor** (``python -m
  swarm_redis.jobmon.distributor``) in its own session, so that killing the leader's process
  does not kill it;
* the supervisor starts jobmon's distributor as its child (which dies with it: parent-death
  signal), renews the lease every third of its TTL, and stops the child and exits when the
  lease is no longer its own (a paused supervisor whose lease expired: another one may be
  running), when the run is over in Redis, or on SIGTERM; when the child dies it gives the
  lease back at once, so the leader starts a new one on its next round.

jobmon's server has no R -> I transition for runs; a restarted distributor's own status updates
(I, O) on a RUNNING run are refused by the server, which answers the status it holds and
changes nothing, so the restarted distributor simply carries on: it re-reads its task instances
from the database (QUEUED, INSTANTIATED, LAUNCHED, RUNNING ...) and continues. It is jobmon's
distributor run through :mod:`swarm_redis.jobmon.adopt`, which takes over what jobmon's own
distributor cannot: the dead one's INSTANTIATED batches, and LAUNCHED or TRIAGING instances whose
cluster job it never knew.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis as redis_py

from swarm_redis.constants import TERMINAL_RUN_STATUSES
from swarm_redis.engine.keys import RunKeys

__all__ = [
    "DistributorLease",
    "claim",
    "main",
    "read_lease",
    "release",
    "renew",
    "start_supervisor",
]

logger = logging.getLogger(__name__)

#: TTL of a lease claimed by the leader before the supervisor runs (covers jobmon's start-up).
START_TTL_S = 60.0
#: TTL the supervisor keeps its lease at.
LEASE_TTL_S = 6.0


@dataclass(frozen=True)
class DistributorLease:
    """The run's distributor lease.

    Attributes:
        token: Random token of the supervisor that owns it.
        host: Host of the supervisor.
        pid: Process id of the supervisor (0 while it starts).
        state: "starting", "alive" (jobmon's distributor said ALIVE) or "stopping".
        ttl_ms: Milliseconds left on the lease.
    """

    token: str
    host: str
    pid: int
    state: str
    ttl_ms: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_lease(client: Any, keys: RunKeys) -> DistributorLease | None:
    """The current lease, or None when nobody holds one."""
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.distributor)
    pipe.pttl(keys.distributor)
    value, ttl = pipe.execute()
    if value is None:
        return None
    parts = _text(value).split("|")
    if len(parts) != 4 or not parts[2].isdigit():
        logger.warning("unreadable distributor lease %r", value)
        return DistributorLease(parts[0], "?", 0, "?", int(ttl))
    return DistributorLease(parts[0], parts[1], int(parts[2]), parts[3], int(ttl))


def claim(client: Any, keys: RunKeys, token: str, *, ttl_s: float = START_TTL_S) -> bool:
    """Claim the lease for a new supervisor; False if one is held."""
    value = f"{token}|{socket.gethostname()}|0|starting"
    return bool(client.set(keys.distributor, value, nx=True, px=max(1, int(ttl_s * 1000))))


def _swap(client: Any, key: str, token: str, value: str | None, ttl_ms: int) -> bool:
    """Set (or delete, value None) the lease if ``token`` still owns it: WATCH/MULTI CAS."""
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(key)
            current = pipe.get(key)
            if current is None or _text(current).split("|", 1)[0] != token:
                pipe.unwatch()
                return False
            pipe.multi()
            if value is None:
                pipe.delete(key)
            else:
                pipe.set(key, value, px=ttl_ms)
            pipe.execute()
            return True
        except redis_py.WatchError:
            return False


def renew(
    client: Any, keys: RunKeys, token: str, state: str, *, ttl_s: float = LEASE_TTL_S
) -> bool:
    """Extend the lease this supervisor owns; False when it is no longer its own."""
    value = f"{token}|{socket.gethostname()}|{os.getpid()}|{state}"
    return _swap(client, keys.distributor, token, value, max(1, int(ttl_s * 1000)))


def release(client: Any, keys: RunKeys, token: str) -> bool:
    """Give the lease back (only if this token owns it)."""
    return _swap(client, keys.distributor, token, None, 0)


def start_supervisor(
    *,
    url: str,
    prefix: str,
    run_id: int,
    cluster_name: str,
    token: str,
    log_path: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a supervisor process for a claimed lease, in its own session."""
    cmd = [
        sys.executable,
        "-m",
        "swarm_redis.jobmon.distributor",
        "--url",
        url,
        "--prefix",
        prefix,
        "--run",
        str(run_id),
        "--cluster",
        cluster_name,
        "--token",
        token,
    ]
    out: Any = subprocess.DEVNULL
    if log_path:
        out = open(log_path, "ab")  # noqa: SIM115 -- handed to the child
    child_env = dict(os.environ if env is None else env)
    bin_dir = os.path.dirname(sys.executable)
    child_env["PATH"] = bin_dir + os.pathsep + child_env.get("PATH", "")
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=out, env=child_env, start_new_session=True)
    finally:
        if out is not subprocess.DEVNULL:
            out.close()


def _die_with_parent() -> None:
    """In the child: SIGKILL when the supervisor dies (Linux PR_SET_PDEATHSIG; jobmon's
    distributor may swallow a SIGTERM that lands inside one of its commands)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)


class _Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client = redis_py.Redis.from_url(args.url, protocol=3, socket_timeout=10)
        self.keys = RunKeys(args.prefix, args.run)
        self.stop = threading.Event()
        self.alive = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None

    def _read_stderr(self) -> None:
        assert self.child is not None and self.child.stderr is not None
        buffer = b""
        fd = self.child.stderr.fileno()
        for chunk in iter(lambda: os.read(fd, 4096), b""):
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
            buffer = (buffer + chunk)[-64:]
            if b"ALIVE" in buffer:
                self.alive.set()

    def _start_child(self) -> None:
        env = dict(os.environ)
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        cmd = [
            sys.executable,
            "-m",
            "swarm_redis.jobmon.adopt",
            "start",
            "--cluster_name",
            self.args.cluster,
            "--workflow_run_id",
            str(self.args.run),
        ]
        self.child = subprocess.Popen(
            cmd, stderr=subprocess.PIPE, env=env, preexec_fn=_die_with_parent
        )
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _stop_child(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def _run_over(self) -> bool:
        status = self.client.hget(self.keys.meta, "status")
        return status is not None and _text(status) in TERMINAL_RUN_STATUSES

    def run(self) -> int:
        token = self.args.token
        if not renew(self.client, self.keys, token, "starting", ttl_s=START_TTL_S):
            logger.error(
                "lease of run %s is not ours (token %s): not starting", self.args.run, token
            )
            return 3
        self._start_child()
        code = 0
        period = self.args.ttl / 3
        try:
            while not self.stop.wait(period if self.alive.is_set() else 0.2):
                assert self.child is not None
                if self.child.poll() is not None:
                    code = self.child.returncode or 0
                    logger.warning("jobmon distributor exited with %s", code)
                    break
                if self._run_over():
                    logger.info("run %s is over: stopping the distributor", self.args.run)
                    break
                state = "alive" if self.alive.is_set() else "starting"
                ttl = self.args.ttl if self.alive.is_set() else START_TTL_S
                if not renew(self.client, self.keys, token, state, ttl_s=ttl):
                    logger.error("distributor lease lost: stopping (another may run)")
                    code = 4
                    break
        finally:
            self._stop_child()
            with contextlib.suppress(Exception):
                release(self.client, self.keys, token)
            self.client.close()
        return code


def main(argv: Sequence[str] | None = None) -> int:
    """The supervisor process (started by the leader through :func:`start_supervisor`)."""
    p = argparse.ArgumentParser(prog="python -m swarm_redis.jobmon.distributor")
    p.add_argument("--url", required=True)
    p.add_argument("--prefix", default="swarm")
    p.add_argument("--run", type=int, required=True)
    p.add_argument("--cluster", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--ttl", type=float, default=LEASE_TTL_S)
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s distributor-supervisor[{os.getpid()}] %(levelname)s: %(message)s",
    )
    sup = _Supervisor(args)
    signal.signal(signal.SIGTERM, lambda signum, frame: sup.stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: sup.stop.set())
    return sup.run()


def new_token() -> str:
    """A fresh lease token."""
    return secrets.token_hex(8)


if __name__ == "__main__":
    sys.exit(main())
