"""The demo's replica processes: start them, SIGKILL one, replace it, stop them all."""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from swarm_redis.demo.redis_server import pdeathsig_preexec

__all__ = ["LEASE_S", "ReplicaPool", "replica_command"]

#: Replica lease: a killed replica's claims are re-driven after about this long.
LEASE_S = 2.0


def replica_command(
    url: str, prefix: str, run_id: int, sim_address: str, *, lease_s: float = LEASE_S
) -> list[str]:
    """The command line of one replica process."""
    return [
        sys.executable,
        "-m",
        "swarm_redis.replica",
        "--url",
        url,
        "--prefix",
        prefix,
        "--run",
        str(run_id),
        "--sim",
        sim_address,
        "--ttl",
        f"{lease_s:g}",
    ]


@dataclass
class _Member:
    serial: int
    proc: subprocess.Popen[bytes]
    log: Path


class ReplicaPool:
    """The demo's replica processes: start, SIGKILL one, replace, stop them all.

    Each replica runs in its own session (a terminal Ctrl-C reaches only the demo, which then
    stops the replicas in order) and, on Linux, dies with the demo (``PR_SET_PDEATHSIG``).
    Its stdout and stderr go to ``logdir/replica-<n>.log``.
    """

    def __init__(self, command: Sequence[str], env: dict[str, str], logdir: Path) -> None:
        self.command = list(command)
        self.env = env
        self.logdir = logdir
        self.members: list[_Member] = []
        self.kills = 0
        self.crashes: list[tuple[int, int]] = []  # (serial, exit status) of unexpected exits
        self.pids: list[int] = []  # every pid ever started, for the report
        self._serial = 0

    def start_one(self) -> _Member:
        """Start one more replica process."""
        self._serial += 1
        log = self.logdir / f"replica-{self._serial}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=pdeathsig_preexec(),
            )
        member = _Member(self._serial, proc, log)
        self.members.append(member)
        self.pids.append(proc.pid)
        return member

    def alive(self) -> int:
        """Replica processes still running."""
        return sum(1 for m in self.members if m.proc.poll() is None)

    def kill_random(self, rng: random.Random) -> int | None:
        """SIGKILL a random running replica and reap it; its pid, or None if none runs."""
        running = [m for m in self.members if m.proc.poll() is None]
        if not running:
            return None
        victim = rng.choice(running)
        with contextlib.suppress(ProcessLookupError):
            victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        self.members.remove(victim)
        self.kills += 1
        return victim.proc.pid

    def collect_exited(self) -> list[_Member]:
        """Forget replicas that exited by themselves; record non-zero exits as crashes."""
        gone = [m for m in self.members if m.proc.poll() is not None]
        for m in gone:
            self.members.remove(m)
            if m.proc.returncode != 0:
                self.crashes.append((m.serial, int(m.proc.returncode)))
        return gone

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM every running replica (clean leave), then SIGKILL the ones that linger.

        Replicas that already exited by themselves are collected first (see
        :meth:`collect_exited`); the ones stopped here are not counted as crashes.
        """
        self.collect_exited()
        for m in self.members:
            if m.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for m in self.members:
            try:
                m.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.kill()
                m.proc.wait()
        self.members.clear()

    def log_tail(self, serial: int, lines: int = 15) -> str:
        """The last lines of one replica's log."""
        path = self.logdir / f"replica-{serial}.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])
