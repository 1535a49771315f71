"""Measuring instruments: Redis CPU, memory and script time from INFO, the load of the machine
during a measurement (:class:`LoadWatch`), and PING probes in a separate process
(:class:`PingProbe`, :class:`BusyPingProbe`)."""

from __future__ import annotations

import os
import time
from array import array
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import redis

from swarm_redis.bench.config import SPAWN
from swarm_redis.demo.embedded import connect


def server_cpu(client: Any) -> float | None:
    """Redis CPU seconds (user + sys, all threads) so far, or None without INFO."""
    try:
        info = client.info("cpu")
    except redis.ResponseError:
        return None
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def used_memory(client: Any) -> int | None:
    """INFO ``used_memory``, or None without INFO."""
    try:
        return int(client.info("memory")["used_memory"])
    except redis.ResponseError:
        return None


def script_usec(client: Any) -> int | None:
    """Microseconds Redis spent in EVALSHA so far (INFO commandstats), or None."""
    try:
        stats = client.info("commandstats")
    except redis.ResponseError:
        return None
    entry = stats.get("cmdstat_evalsha")
    return int(entry["usec"]) if entry else 0


def evalsha_calls(client: Any) -> int | None:
    """EVALSHA calls so far (INFO commandstats), or None without INFO."""
    try:
        entry = client.info("commandstats").get("cmdstat_evalsha")
    except redis.ResponseError:
        return None
    return int(entry["calls"]) if entry else 0


def longest_command_ms(entries: Sequence[dict[str, Any]]) -> float:
    """The longest command of SLOWLOG entries (ms), the suite's own SLOWLOG calls left out:
    a SLOWLOG RESET frees every entry logged before it (the registration of a 1M-task run logs
    thousands) and is logged itself, so it would stand for the calls it is meant to measure."""
    durations = []
    for e in entries:
        command = e.get("command") or b""
        if isinstance(command, str):
            command = command.encode()
        if not command.upper().startswith(b"SLOWLOG"):
            durations.append(int(e["duration"]))
    return round(max(durations, default=0) / 1000, 3)


def delta(after: float | None, before: float | None) -> float | None:
    """``after - before``, or None when either is unknown."""
    return None if after is None or before is None else after - before


def rate(n: int, seconds: float) -> float:
    """``n`` per second of ``seconds`` (0 for no time)."""
    return n / seconds if seconds > 0 else 0.0


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine spent busy so far (all cores, /proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class LoadWatch:
    """Load of the machine during a measurement: load average, CPU used by everyone, and the
    CPU seconds other processes used (``others_cpu_s``, ``others_cores``) when ours is known.

    Ours is given to :meth:`result`, or, with a ``client``, read as Redis CPU (INFO) plus the
    CPU of this process and of its children that ended meanwhile (PING probes).
    """

    def __init__(self, client: Any = None) -> None:
        self.client = client
        self.load0 = os.getloadavg()[0]
        self.busy0 = machine_busy_s()
        self.own0 = self._own()
        self.t0 = time.perf_counter()

    def _own(self) -> float | None:
        if self.client is None:
            return None
        srv = server_cpu(self.client)
        if srv is None:
            return None
        t = os.times()
        return srv + t.user + t.system + t.children_user + t.children_system

    def result(self, own_cpu_s: float | None = None) -> dict[str, Any]:
        """Load averages, machine CPU busy, and the part not ours."""
        wall = time.perf_counter() - self.t0
        busy = delta(machine_busy_s(), self.busy0)
        if own_cpu_s is None:
            own_cpu_s = delta(self._own(), self.own0)
        out: dict[str, Any] = {
            "seconds": round(wall, 3),
            "loadavg_1m": [round(self.load0, 2), round(os.getloadavg()[0], 2)],
            "machine_busy_cores": round(busy / wall, 2) if busy is not None and wall else None,
        }
        if busy is not None and own_cpu_s is not None:
            others = max(0.0, busy - own_cpu_s)
            out["others_cpu_s"] = round(others, 3)
            out["others_cores"] = round(others / wall, 2) if wall else None
        return out


def _pinger(url: str, conn: Connection, interval_s: float) -> None:
    """Child process: PING until told to stop; send back (start times, latencies)."""
    client = connect(url, protocol=3)
    starts, lats = array("d"), array("d")
    conn.send("ready")
    while not conn.poll():
        t = time.perf_counter()
        client.ping()
        lats.append(time.perf_counter() - t)
        starts.append(t)
        time.sleep(interval_s)
    conn.recv()
    conn.send((starts.tobytes(), lats.tobytes()))
    client.close()


P = TypeVar("P", bound="PingProbe")


class PingProbe:
    """A separate process PINGs Redis every ``interval_s``; latencies per marked window.

    A process, not a thread: the benchmark's own Python must not delay the probe (GIL).
    """

    def __init__(self, url: str, interval_s: float = 0.0005) -> None:
        self.url = url
        self.interval_s = interval_s
        self.windows: dict[str, tuple[float, float]] = {}
        self.starts: list[float] = []
        self.lats: list[float] = []
        self._proc: Any = None
        self._conn: Connection | None = None

    def _worker(self) -> Callable[[str, Connection, float], None]:
        """The function the probe process runs."""
        return _pinger

    def __enter__(self: P) -> P:
        parent, child = SPAWN.Pipe()
        self._proc = SPAWN.Process(
            target=self._worker(), args=(self.url, child, self.interval_s), daemon=True
        )
        self._proc.start()
        self._conn = parent
        if not parent.poll(30) or parent.recv() != "ready":
            raise RuntimeError("PING probe did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        conn = self._conn
        if conn is not None:
            conn.send("stop")
            if conn.poll(60):
                got = []
                for part in conn.recv():
                    a = array("d")
                    a.frombytes(part)
                    got.append(list(a))
                self._received(got)
        if self._proc is not None:
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()

    def _received(self, series: list[list[float]]) -> None:
        """Keep what the probe process sent back (its worker's series, in order)."""
        self.starts, self.lats = series

    def mark(self, name: str, start: float, stop: float) -> None:
        """Name a time window (``time.perf_counter`` values, comparable across processes)."""
        self.windows[name] = (start, stop)

    def stats(self, *names: str) -> dict[str, float]:
        """PING count, max, p99 and p50 (ms) of the PINGs sent inside the named windows."""
        spans = [self.windows[n] for n in names]
        sel = [
            lat * 1000
            for t, lat in zip(self.starts, self.lats)
            if any(a <= t <= b for a, b in spans)
        ]
        return latency_stats(sel)


def latency_stats(ms: Sequence[float]) -> dict[str, float]:
    if not ms:
        return {"pings": 0, "max_ms": 0.0, "p99_ms": 0.0, "p50_ms": 0.0}
    ordered = sorted(ms)
    return {
        "pings": len(ordered),
        "max_ms": round(ordered[-1], 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "p50_ms": round(ordered[len(ordered) // 2], 3),
    }


def _busy_pinger(url: str, conn: Connection, interval_s: float) -> None:
    """Child process: PING until told to stop; (start times, latencies, BUSY reply times)."""
    client = connect(url, protocol=3)
    starts, lats, busy = array("d"), array("d"), array("d")
    conn.send("ready")
    while not conn.poll():
        t = time.perf_counter()
        try:
            client.ping()
        except redis.ResponseError as e:
            if "BUSY" not in str(e):
                raise
            busy.append(t)
        except redis.TimeoutError:  # blocked past the socket timeout: a (long) latency
            pass
        lats.append(time.perf_counter() - t)
        starts.append(t)
        time.sleep(interval_s)
    conn.recv()
    conn.send((starts.tobytes(), lats.tobytes(), busy.tobytes()))
    client.close()


class BusyPingProbe(PingProbe):
    """A :class:`PingProbe` that also counts BUSY replies (a script past busy-reply-threshold)."""

    def __init__(self, url: str, interval_s: float = 0.0005) -> None:
        super().__init__(url, interval_s)
        self.busy: list[float] = []

    def _worker(self) -> Callable[[str, Connection, float], None]:
        return _busy_pinger

    def _received(self, series: list[list[float]]) -> None:
        self.starts, self.lats, self.busy = series

    def busy_in(self, name: str) -> int:
        """BUSY replies inside the named window."""
        a, b = self.windows[name]
        return sum(1 for t in self.busy if a <= t <= b)
