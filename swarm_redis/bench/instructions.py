"""Redis instructions per task of the hot paths, counted by valgrind's callgrind.

CPU time moves with the machine's load; the number of instructions Redis executes for the same
calls does not (two runs agree to about 0.01 %). This starts a private ``redis-server`` under
``valgrind --tool=callgrind`` with instrumentation off, and switches it on only around the calls
measured, so a figure holds the commands, the Lua and the reply encoding of those calls alone.
Every script is called once on another run first (loaded and compiled outside the windows).

* ``lifecycle``: ``--tasks`` tasks in layers of ``--width``, fan-in 3, claimed in batches of
  ``--batch``: claim -> ack Q -> apply R -> apply D (propagating), per operation;
* ``dequeue``: ``--tasks`` queued tasks of one array taken off the queue in calls of
  :data:`~swarm_redis.engine.core.DEQUEUE_CHUNK`;
* ``steps``: what one step of a script costs (a record matched, a table made, a value read
  with HMGET, a redis.call ...), ``--tasks`` of each: :mod:`swarm_redis.bench.lua_steps`.

Run it with ``python -m swarm_redis.bench.instructions [lifecycle] [dequeue]`` (needs
``valgrind``, ``callgrind_control``, ``callgrind_annotate`` and ``redis-server`` on PATH; valgrind makes Redis about 50
times slower, so sizes stay small: the per-task figures do not depend on them much).

Where the instructions go: ``--keep DIR`` keeps every window's dump as
``DIR/<operation>.<n>`` (``callgrind_annotate --inclusive=yes`` reads one), and
``--redis-server PATH`` runs another build, e.g. one compiled with ``-g`` so that the dumps name
the Lua interpreter's functions (a packaged redis-server is stripped).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis

from swarm_redis.bench import layout_floor, lua_steps
from swarm_redis.bench.config import ARRAY_LIMIT
from swarm_redis.bench.loop import OPERATIONS, lifecycle_loop
from swarm_redis.bench.scenarios.lifecycle import redis_ops, registered_run
from swarm_redis.engine.core import DEQUEUE_CHUNK
from swarm_redis.records import ArrayRecord, TaskRecord
from swarm_redis.state import RedisSwarmState
from swarm_redis.testing.dags import DagShape, build_dag

T = TypeVar("T")

#: What the harness needs on PATH.
TOOLS = ("valgrind", "callgrind_control", "callgrind_annotate", "redis-server")

_TOTALS = re.compile(rb"^totals:\s*(\d+)", re.MULTILINE)


class HarnessError(RuntimeError):
    """The harness cannot run here (a tool is missing, or the server did not start)."""


def missing_tools() -> list[str]:
    """The tools of :data:`TOOLS` not on PATH."""
    return [t for t in TOOLS if shutil.which(t) is None]


def read_totals(dump: bytes) -> int:
    """The instruction count of one callgrind dump (its ``totals:`` line)."""
    found = _TOTALS.search(dump)
    if found is None:
        raise HarnessError("a callgrind dump without a totals line")
    return int(found.group(1))


class Callgrind:
    """A private redis-server under callgrind, instrumented only inside :meth:`window`."""

    def __init__(
        self,
        start_timeout_s: float = 60.0,
        server: str = "redis-server",
        keep: Path | None = None,
    ) -> None:
        missing = missing_tools()
        if server != "redis-server" and shutil.which(server) is None:
            missing.append(server)
        if missing:
            raise HarnessError(f"missing on PATH: {', '.join(missing)}")
        self.keep = keep
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="swarm-callgrind-"))
        sock = self.dir / "redis.sock"
        self.proc = subprocess.Popen(
            [
                "valgrind", "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={self.dir}/cg.out",
                server, "--port", "0", "--unixsocket", str(sock),
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.client = redis.Redis(unix_socket_path=str(sock), protocol=3)
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                if sock.exists() and self.client.ping():
                    break
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise HarnessError("redis-server under valgrind did not start")
            time.sleep(0.2)
        self._dumps = 0

    def _control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(self.proc.pid)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def window(self, fn: Callable[[], T], name: str = "window") -> tuple[T, int]:
        """``fn()`` with instrumentation on: its result and the instructions Redis executed
        (the dump is kept as ``<keep>/<name>.<n>`` when the harness keeps dumps)."""
        self._control("-z")
        self._control("-i", "on")
        try:
            result = fn()
        finally:
            self._control("-i", "off")
        self._control("-d")
        self._dumps += 1
        dump = self.dir / f"cg.out.{self._dumps}"
        for _ in range(100):  # written by the server's process: wait for it
            if dump.exists() and _TOTALS.search(dump.read_bytes()):
                break
            time.sleep(0.05)
        if self.keep is not None:
            shutil.copy(dump, self.keep / f"{name.replace(' ', '_')}.{self._dumps:04d}")
        return result, read_totals(dump.read_bytes())

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def lifecycle(cg: Callgrind, tasks: int, width: int, batch: int) -> dict[str, float]:
    """Instructions per task of each lifecycle operation, and their total."""
    warm = registered_run(cg.client, "cg", 1, build_dag(DagShape(30, width=10), ARRAY_LIMIT))
    lifecycle_loop(redis_ops(warm, 10)[0])  # every script loaded outside the windows
    dag = build_dag(DagShape(tasks, width=width, fan_in=3), ARRAY_LIMIT)
    ops, _ = redis_ops(registered_run(cg.client, "cg", 2, dag), batch)
    counts = dict.fromkeys(OPERATIONS, 0)

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            result, n = cg.window(lambda: fn(*args), name)
            counts[name] += n
            return result

        return counted

    done = lifecycle_loop(ops.wrapped(wrap))
    if done != tasks:
        raise HarnessError(f"the lifecycle finished {done} of {tasks} tasks")
    out = {name: n / tasks for name, n in counts.items()}
    out["total"] = sum(counts.values()) / tasks
    return out


def floor(cg: Callgrind, tasks: int, width: int, batch: int) -> dict[str, dict[str, float]]:
    """Instructions per task of each lifecycle operation of each layout's floor
    (:mod:`~swarm_redis.bench.layout_floor`), on the DAG :func:`lifecycle` runs."""
    out: dict[str, dict[str, float]] = {}
    for k, layout in enumerate(layout_floor.LAYOUTS):
        warm = layout_floor.floor_run(cg.client, layout, DagShape(30, width=10), 10, f"cgw{k}:")
        lifecycle_loop(warm)  # both scripts loaded outside the windows
        ops = layout_floor.floor_run(
            cg.client, layout, DagShape(tasks, width=width, fan_in=3), batch, f"cgf{k}:"
        )
        counts = dict.fromkeys(OPERATIONS, 0)

        def wrap(name: str, fn: Callable[..., Any], layout: str = layout) -> Callable[..., Any]:
            def counted(*args: Any) -> Any:
                result, n = cg.window(lambda: fn(*args), f"{layout} {name}")
                counts[name] += n  # noqa: B023 (the loop's own counts, used within it)
                return result

            return counted

        done = lifecycle_loop(ops.wrapped(wrap))
        if done != tasks:
            raise HarnessError(f"the {layout} floor finished {done} of {tasks} tasks")
        out[layout] = {name: n / tasks for name, n in counts.items()}
        out[layout]["total"] = sum(counts.values()) / tasks
    return out


def dequeue(cg: Callgrind, tasks: int) -> dict[str, float]:
    """Instructions per task of taking ``tasks`` queued tasks off the queue."""
    totals = 0
    for run_id, n in ((3, DEQUEUE_CHUNK), (4, tasks)):  # the first run loads the script
        state = RedisSwarmState(1, run_id, 1, redis=cg.client, prefix="cg")
        state.add_array(ArrayRecord(1, n))
        records = [TaskRecord(i, 1, "G", 0, 0) for i in range(1, n + 1)]
        state.add_tasks(records)
        state.enqueue_tasks(records)
        if run_id == 3:
            state.dequeue_tasks(n)
            continue
        while True:
            got, count = cg.window(
                lambda: state.dequeue_tasks(DEQUEUE_CHUNK),  # noqa: B023
                "dequeue",
            )
            totals += count
            if not got:
                break
    return {"dequeue": totals / tasks}


#: Where an instruction is spent, by the source file of the function that executes it
#: (first match wins; a redis-server built with -g names them, a stripped one does not).
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Lua bytecode loop (lvm.c)", ("lua/src/lvm.c",)),
    ("Lua tables (ltable.c)", ("lua/src/ltable.c",)),
    ("Lua string interning (lstring.c)", ("lua/src/lstring.c",)),
    ("Lua string library: match, find, sub (lstrlib.c)", ("lua/src/lstrlib.c",)),
    ("Lua calls, stack, C API (ldo.c, lapi.c, ...)", ("lua/src/ldo.c", "lua/src/lapi.c",
                                                      "lua/src/lfunc.c", "lua/src/lauxlib.c",
                                                      "lua/src/lbaselib.c")),
    ("Lua garbage collector (lgc.c)", ("lua/src/lgc.c",)),
    ("Lua, other", ("lua/src/",)),
    ("redis.call glue (script_lua.c, script.c)", ("src/script_lua.c", "src/script.c")),
    ("Redis commands and data structures", ("src/",)),
    ("libc (malloc, memcpy, printf, strtod)", ("libc", "malloc", "string/", "stdio", "stdlib")),
)  # fmt: skip

_SELF = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S+):\S+")


def areas_of(dump: Path) -> dict[str, int]:
    """The instructions of one kept dump by :data:`AREAS` (``other`` for the rest)."""
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--auto=no", str(dump)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    found: dict[str, int] = {}
    for line in out.splitlines():
        m = _SELF.match(line)
        if m is None or "PROGRAM TOTALS" in line:
            continue
        area = next((name for name, keys in AREAS if any(k in m.group(2) for k in keys)), "other")
        found[area] = found.get(area, 0) + int(m.group(1).replace(",", ""))
    return found


def areas(keep: Path, tasks: int) -> dict[str, dict[str, float]]:
    """Instructions per task by area and operation, over the dumps kept in ``keep``."""
    out: dict[str, dict[str, float]] = {}
    for dump in sorted(keep.iterdir()):
        op = dump.name.rsplit(".", 1)[0].replace("_", " ")
        for area, n in areas_of(dump).items():
            row = out.setdefault(area, {})
            row[op] = row.get(op, 0.0) + n / tasks
    return out


def steps(cg: Callgrind, n: int, names: Sequence[str] | None = None) -> dict[str, float]:
    """Instructions of one Lua step of :data:`~swarm_redis.bench.lua_steps.STEPS` each."""
    out = {}
    for name in names or list(lua_steps.STEPS):
        setup, full = lua_steps.scripts(name, n)
        cg.client.eval(setup, 0)  # compiled (and the fixtures written) outside the windows
        cg.client.eval(full, 0)
        _, base = cg.window(lambda: cg.client.eval(setup, 0))  # noqa: B023
        _, total = cg.window(lambda: cg.client.eval(full, 0))  # noqa: B023
        out[name] = (total - base) / n
    return out


def print_areas(table: dict[str, dict[str, float]]) -> None:
    """The areas table, k instructions per task, one column per lifecycle operation."""
    ops = [op for op in OPERATIONS if any(op in row for row in table.values())]
    total = sum(sum(row.values()) for row in table.values())
    print("where the instructions go (k per task):")
    print(f"  {'':<50}" + "".join(f"{op:>9}" for op in ops) + f"{'all':>9}")
    for area, row in sorted(table.items(), key=lambda kv: -sum(kv[1].values())):
        cells = "".join(f"{row.get(op, 0.0) / 1000:9.1f}" for op in ops)
        share = sum(row.values())
        print(f"  {area:<50}{cells}{share / 1000:9.1f}  {100 * share / total:3.0f} %")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m swarm_redis.bench.instructions",
        description="Redis instructions per task of the hot paths, under callgrind",
    )
    p.add_argument(
        "what", nargs="*", choices=["lifecycle", "dequeue", "steps", "floor"], default=["lifecycle"]
    )
    p.add_argument("--tasks", type=int, default=3000, help="tasks (default 3000)")
    p.add_argument("--width", type=int, default=1000, help="lifecycle layer width (1000)")
    p.add_argument("--batch", type=int, default=500, help="lifecycle claim size (500)")
    p.add_argument(
        "--redis-server",
        default="redis-server",
        metavar="PATH",
        help="the redis-server to run (e.g. a build with symbols; default: the one on PATH)",
    )
    p.add_argument(
        "--areas",
        action="store_true",
        help="lifecycle: also print where the instructions go, by source file (needs a"
        " redis-server built with symbols, see --redis-server)",
    )
    p.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep each window's callgrind dump as DIR/<operation>.<n>",
    )
    args = p.parse_args(argv)
    keep = args.keep
    if args.areas and keep is None:
        keep = Path(tempfile.mkdtemp(prefix="swarm-callgrind-keep-"))
    try:
        cg = Callgrind(server=args.redis_server, keep=keep)
    except HarnessError as e:
        print(f"instructions: {e}", file=sys.stderr)
        return 2
    try:
        for what in args.what:
            if what == "steps":
                figures = steps(cg, args.tasks)
                print(f"steps: {args.tasks} of each, Redis instructions per step")
                for name, value in figures.items():
                    print(f"  {name:<18} {value / 1000:8.2f} k  {lua_steps.STEPS[name][0]}")
                continue
            if what == "floor":
                for layout, row in floor(cg, args.tasks, args.width, args.batch).items():
                    print(
                        f"floor of the {layout} layout: {args.tasks} tasks, instructions per task"
                    )
                    for name, value in row.items():
                        print(f"  {name:<10} {value / 1000:10.2f} k")
                continue
            if what == "lifecycle":
                figures = lifecycle(cg, args.tasks, args.width, args.batch)
            else:
                figures = dequeue(cg, args.tasks)
            print(f"{what}: {args.tasks} tasks, Redis instructions per task")
            for name, value in figures.items():
                print(f"  {name:<10} {value / 1000:10.2f} k")
            if what == "lifecycle" and args.areas and keep is not None:
                print_areas(areas(keep, args.tasks))
    finally:
        cg.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
