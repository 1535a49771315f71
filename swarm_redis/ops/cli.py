"""``swarm-redis``: look at and operate runs from a shell (also ``python -m swarm_redis``).

A thin layer: it parses arguments, reads through :mod:`swarm_redis.ops.reads`,
:mod:`swarm_redis.ops.events`, :mod:`swarm_redis.ops.verify` and :mod:`swarm_redis.ops.snapshot`, and
prints rich tables (colour only on a terminal) or, with ``--json``, JSON for machines.

The Redis URL comes from ``--url``, else ``REDIS_URL``, else a throw-away embedded server (empty;
handy only to try the tool). Read commands (runs, status, watch, tasks, task, events, replicas,
verify without --repair, export, exporter) use plain read commands only, so a read-only ACL user
can run them (the README (Operating a run)).

RUN is always an integer and --prefix a non-empty string without braces, and every SCAN pattern
escapes the prefix (keys.glob_escape), so no argument can reach another run. ``purge`` deletes
the run's key-table names only (no pattern) and refuses a live run (status not terminal, or a
replica lease still valid by Redis's clock) unless --force. ``import`` checks the whole file
first (snapshot.validate_snapshot), takes the prefix from --prefix (never from the file), and
moves the keys into place in one transaction. The exporter listens on 127.0.0.1 unless --bind.

Exit codes (module constants):
    0 EXIT_OK              done; verify found no drift
    1 EXIT_ERROR           any other error (bad snapshot file, import onto an existing run,
                           purge of a live run without --force, a run changed during purge ...)
    2 EXIT_USAGE           bad arguments (RUN not an integer, bad --prefix ...); purge without
                           --yes when stdin is not a terminal
    3 EXIT_NOT_FOUND       the run (or the task) does not exist
    4 EXIT_DRIFT           verify found drift (after --repair: drift is left)
    5 EXIT_CONNECTION      Redis could not be reached (or refused the credentials)
    6 EXIT_WRITE_REFUSED   Redis refused a command with NOPERM (e.g. a read-only ACL user)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
import redis
from rich.console import Console, RenderableType
from rich.live import Live

from swarm_redis.constants import TASK_STATUSES
from swarm_redis.demo.embedded import resolve_url
from swarm_redis.engine.keys import RunKeys, check_prefix
from swarm_redis.errors import SwarmRedisError, UnknownRunError
from swarm_redis.exit_codes import (
    EXIT_CONNECTION,
    EXIT_DRIFT,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_WRITE_REFUSED,
)
from swarm_redis.ops import render
from swarm_redis.ops.events import follow_events, format_event, read_events
from swarm_redis.ops.reads import (
    RunLiveness,
    RunSnapshot,
    list_runs,
    read_liveness,
    read_snapshot,
)
from swarm_redis.ops.tasks import list_tasks, task_detail

__all__ = [
    "EXIT_CONNECTION",
    "EXIT_DRIFT",
    "EXIT_ERROR",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_WRITE_REFUSED",
    "build_parser",
    "main",
]


DEFAULT_PREFIX = "swarm"


class CliError(Exception):
    """A failure with its exit code and the message for stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass
class Ctx:
    """What every command gets: parsed args, the client, the console and the output mode."""

    args: argparse.Namespace
    client: Any
    console: Console
    json: bool

    @property
    def prefix(self) -> str:
        return DEFAULT_PREFIX if self.args.prefix is None else str(self.args.prefix)

    def keys(self) -> RunKeys:
        return RunKeys(self.prefix, self.args.run)

    def emit(self, obj: Any) -> None:
        """Print one JSON document (``--json``)."""
        out = sys.stdout
        out.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
        out.write("\n")
        out.flush()

    def emit_line(self, obj: Any) -> None:
        """Print one JSON object on one line (streams: events, watch)."""
        sys.stdout.write(orjson.dumps(obj).decode() + "\n")
        sys.stdout.flush()

    def show(self, renderable: RenderableType) -> None:
        self.console.print(renderable)


# --- commands -----------------------------------------------------------------------------------


def _require_run(ctx: Ctx) -> RunKeys:
    keys = ctx.keys()
    if int(ctx.client.exists(keys.meta)) == 0:
        raise UnknownRunError(f"workflow run {keys.run_id} not found under prefix {keys.prefix!r}")
    return keys


def cmd_runs(ctx: Ctx) -> int:
    runs = list_runs(ctx.client, ctx.prefix)
    if ctx.json:
        ctx.emit([r.to_json() for r in runs])
    else:
        ctx.show(render.runs_table(runs))
    return EXIT_OK


def cmd_status(ctx: Ctx) -> int:
    snap = read_snapshot(ctx.client, ctx.keys())
    if ctx.json:
        ctx.emit(snap.to_json())
    else:
        ctx.show(render.status_view(snap))
    return EXIT_OK


def _watch_frames(ctx: Ctx) -> Iterator[tuple[RunSnapshot, float | None]]:
    """Snapshots about every ``--interval`` s with the completion rate, until the run is final."""
    keys = ctx.keys()
    prev: tuple[int, float] | None = None
    n = 0
    while True:
        snap = read_snapshot(ctx.client, keys)
        now = time.monotonic()
        rate = None
        if prev is not None and now > prev[1]:
            rate = max(0, snap.done - prev[0]) / (now - prev[1])
        prev = (snap.done, now)
        n += 1
        yield snap, rate
        if snap.all_final or snap.terminal or (ctx.args.count and n >= ctx.args.count):
            return
        time.sleep(ctx.args.interval)


def cmd_watch(ctx: Ctx) -> int:
    if ctx.json:
        for snap, rate in _watch_frames(ctx):
            ctx.emit_line({**snap.to_json(), "rate": rate})
    elif not ctx.console.is_terminal:
        for snap, rate in _watch_frames(ctx):
            ctx.console.print(
                render.watch_line(snap, rate), markup=False, highlight=False, soft_wrap=True
            )
    else:
        frames = _watch_frames(ctx)
        snap, rate = next(frames)
        with Live(render.watch_view(snap, rate), console=ctx.console, auto_refresh=False) as live:
            for snap, rate in frames:
                live.update(render.watch_view(snap, rate), refresh=True)
    return EXIT_OK


def cmd_tasks(ctx: Ctx) -> int:
    keys = _require_run(ctx)
    status = ctx.args.status
    if status is not None and status not in TASK_STATUSES:
        raise CliError(
            EXIT_USAGE, f"unknown task status {status!r} (one of {''.join(TASK_STATUSES)})"
        )
    rows, total = list_tasks(
        ctx.client, keys, status=status, array_id=ctx.args.array, limit=ctx.args.limit
    )
    if ctx.json:
        ctx.emit({"tasks": rows, "shown": len(rows), "total": total})
    else:
        ctx.show(render.tasks_table(rows, total))
    return EXIT_OK


def cmd_task(ctx: Ctx) -> int:
    keys = _require_run(ctx)
    detail = task_detail(ctx.client, keys, ctx.args.task_id)
    if detail is None:
        raise CliError(EXIT_NOT_FOUND, f"task {ctx.args.task_id} not found in run {keys.run_id}")
    if ctx.json:
        ctx.emit(detail.to_json())
    else:
        ctx.show(render.task_view(detail))
    return EXIT_OK


def cmd_events(ctx: Ctx) -> int:
    keys = _require_run(ctx)
    limit: int | None = ctx.args.count
    shown = 0
    last = ctx.args.since

    def out(event: Any) -> None:
        if ctx.json:
            ctx.emit_line(event.to_json())
        else:
            ctx.console.print(format_event(event), markup=False, highlight=False, soft_wrap=True)

    for event in read_events(ctx.client, keys, since=ctx.args.since, count=limit):
        out(event)
        shown += 1
        last = event.id
    if not ctx.args.follow or (limit is not None and shown >= limit):
        return EXIT_OK
    for new in follow_events(ctx.client, keys, after=last or "0-0"):
        if new is None:
            continue
        out(new)
        shown += 1
        if limit is not None and shown >= limit:
            break
    return EXIT_OK


def cmd_verify(ctx: Ctx) -> int:
    from swarm_redis.ops.verify import find_drift, repair

    keys = ctx.keys()
    report = find_drift(ctx.client, keys)
    before = report
    if ctx.args.repair and not report.clean:
        report = repair(ctx.client, keys, report, chunk=ctx.args.chunk)
    if ctx.json:
        if ctx.args.repair:
            ctx.emit(
                {
                    "before": before.to_json(ctx.args.examples),
                    "after": report.to_json(ctx.args.examples),
                }
            )
        else:
            ctx.emit(report.to_json(ctx.args.examples))
    else:
        if ctx.args.repair and before is not report:
            ctx.show(render.drift_view(before, ctx.args.examples))
            ctx.console.print("after repair:", markup=False)
        ctx.show(render.drift_view(report, ctx.args.examples))
    return EXIT_OK if report.clean else EXIT_DRIFT


def cmd_replicas(ctx: Ctx) -> int:
    snap = read_snapshot(ctx.client, ctx.keys())
    if ctx.json:
        data = snap.to_json()
        ctx.emit({"replicas": data["replicas"], "leader": data["leader"], "now_ms": snap.now_ms})
    else:
        ctx.show(render.replicas_view(snap))
    return EXIT_OK


def cmd_reap(ctx: Ctx) -> int:
    from swarm_redis.state import RedisSwarmState

    keys = _require_run(ctx)
    state = RedisSwarmState.attach(ctx.client, int(keys.run_id), prefix=ctx.prefix)
    data = dataclasses.asdict(state.reap(force=True))
    if ctx.json:
        ctx.emit(data)
    else:
        shown = ", ".join(f"{k}={v}" for k, v in data.items())
        ctx.console.print(f"reap of run {keys.run_id}: {shown}", markup=False, soft_wrap=True)
    return EXIT_OK


def _confirm(question: str) -> bool:
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _describe_liveness(life: RunLiveness) -> str:
    """``status RUNNING (R); replicas: r1 (lease 12.3 s left), 2 expired`` for messages."""
    status = "no meta key" if life.run_status is None else _run_status_name(life.run_status)
    parts = [
        f"{r.replica_id} (lease {(r.lease_left_ms or 0) / 1000:.1f} s left)"
        for r in life.live_replicas
    ]
    parts += [
        f"{rid} (lease unreadable: {v[:40]!r})" for rid, v in life.unreadable_replicas.items()
    ]
    replicas = ", ".join(parts) or "none alive"
    if life.expired_replicas:
        replicas += f", {len(life.expired_replicas)} expired"
    return f"status {status}; replicas: {replicas}"


def _run_status_name(letter: str) -> str:
    from swarm_redis.constants import WORKFLOW_RUN_STATUS_NAMES

    return f"{WORKFLOW_RUN_STATUS_NAMES.get(letter, 'unknown')} ({letter})"


def cmd_purge(ctx: Ctx) -> int:
    """Delete the run's own keys (the key table's names, no pattern), refusing a live run.

    The liveness check and the deletion are one WATCHed MULTI/EXEC: a replica that joins or a
    status that changes in between aborts the purge instead of being deleted under it.
    """
    from swarm_redis.ops.snapshot import run_keys_present

    keys = ctx.keys()
    force = bool(ctx.args.force)
    found = run_keys_present(ctx.client, keys)
    if not found:
        raise UnknownRunError(
            f"workflow run {keys.run_id} has no keys under prefix {keys.prefix!r}"
        )
    life = read_liveness(ctx.client, keys)
    described = _describe_liveness(life)
    if life.live and not force:
        why = []
        if life.status_live:
            why.append("its status is not terminal")
        if life.live_replicas:
            why.append(f"{len(life.live_replicas)} replica(s) hold a valid lease")
        if life.unreadable_replicas:
            why.append(f"{len(life.unreadable_replicas)} replica lease(s) cannot be read")
        raise CliError(
            EXIT_ERROR,
            f"refusing to purge run {keys.run_id}: it is live ({' and '.join(why)}; "
            f"{described}); stop it first, or pass --force",
        )
    if not ctx.args.yes:
        if not sys.stdin.isatty():
            raise CliError(
                EXIT_USAGE,
                f"refusing to purge run {keys.run_id} ({len(found)} keys; {described}) "
                "without --yes: stdin is not a terminal",
            )
        live_note = " IT IS LIVE (--force)." if life.live else ""
        if not _confirm(
            f"delete all {len(found)} keys of run {keys.run_id} under {keys.prefix!r} "
            f"({described})?{live_note}"
        ):
            ctx.console.print("purge cancelled", markup=False)
            return EXIT_ERROR
    deleted = _unlink_run(ctx.client, keys, life if not force else None)
    if ctx.json:
        ctx.emit(
            {
                "run_id": str(keys.run_id),
                "prefix": keys.prefix,
                "deleted": deleted,
                "run_status": life.run_status,
                "live": life.live,
                "forced": force,
            }
        )
    else:
        ctx.console.print(f"deleted {deleted} keys of run {keys.run_id}", markup=False)
    return EXIT_OK


def _unlink_run(client: Any, keys: RunKeys, checked: RunLiveness | None) -> int:
    """UNLINK the run's key-table keys in one MULTI/EXEC, WATCHing them all.

    With ``checked`` (no --force) the liveness is read again under WATCH and must still say
    "not live"; any write to the run before EXEC aborts the transaction (nothing deleted).
    """
    with client.pipeline(transaction=True) as pipe:
        pipe.watch(*keys.all)
        if checked is not None:
            again = read_liveness(client, keys)  # any connection: WATCH covers it
            if again.live:
                raise CliError(
                    EXIT_ERROR,
                    f"refusing to purge run {keys.run_id}: it became live "
                    f"({_describe_liveness(again)}); nothing deleted",
                )
        pipe.multi()
        pipe.unlink(*keys.all)
        try:
            (deleted,) = pipe.execute()
        except redis.WatchError:
            raise CliError(
                EXIT_ERROR,
                f"run {keys.run_id} changed during the purge: nothing deleted, try again",
            ) from None
    return int(deleted)


def cmd_export(ctx: Ctx) -> int:
    from swarm_redis.ops.snapshot import export_run, save_snapshot

    snap = export_run(ctx.client, ctx.keys())
    if ctx.args.file == "-":
        sys.stdout.write(orjson.dumps(snap).decode() + "\n")
        return EXIT_OK
    save_snapshot(snap, ctx.args.file)
    n = len(snap["keys"])
    if ctx.json:
        ctx.emit({"run_id": snap["run_id"], "file": ctx.args.file, "keys": n})
    else:
        ctx.console.print(
            f"exported run {snap['run_id']}: {n} keys to {ctx.args.file}", markup=False
        )
    return EXIT_OK


def cmd_import(ctx: Ctx) -> int:
    """Check the whole snapshot, then write it so it appears whole or not at all."""
    from swarm_redis.ops.snapshot import (
        MAX_FILE_BYTES,
        import_run,
        load_snapshot,
        validate_snapshot,
    )

    max_bytes = MAX_FILE_BYTES if ctx.args.max_bytes is None else ctx.args.max_bytes
    snap = load_snapshot(ctx.args.file, max_bytes=max_bytes)
    plan = validate_snapshot(snap, prefix=ctx.prefix, run_id=ctx.args.run)
    for note in plan.notes:
        print(f"swarm-redis: note: {note}", file=sys.stderr)
    keys = import_run(ctx.client, plan, force=ctx.args.force)
    n = plan.key_count
    if ctx.json:
        ctx.emit(
            {"run_id": str(keys.run_id), "prefix": keys.prefix, "keys": n, "notes": plan.notes}
        )
    else:
        ctx.console.print(
            f"imported run {keys.run_id} under prefix {keys.prefix!r}: {n} keys", markup=False
        )
    return EXIT_OK


def cmd_exporter(ctx: Ctx) -> int:
    try:
        from swarm_redis.ops.exporter import serve
    except ImportError as e:
        raise CliError(
            EXIT_ERROR,
            f"the exporter needs prometheus-client: pip install 'swarm-redis[prometheus]' ({e})",
        ) from None
    runs = [str(r) for r in ctx.args.runs] if ctx.args.runs else None
    print(f"serving metrics on http://{ctx.args.addr}:{ctx.args.port}/metrics", file=sys.stderr)
    serve(ctx.client, ctx.args.port, addr=ctx.args.addr, prefix=ctx.prefix, runs=runs)
    return EXIT_OK


# --- parser ---------------------------------------------------------------------------------------

_INT64_MAX = (1 << 63) - 1


def _run_arg(value: str) -> int:
    """argparse type of RUN: a decimal integer, so no run id can be a pattern or a key part."""
    digits = value[1:] if value.startswith("-") else value
    if not digits or not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        raise argparse.ArgumentTypeError(f"workflow run id must be an integer, got {value!r}")
    number = int(value)
    if abs(number) > _INT64_MAX:
        raise argparse.ArgumentTypeError(f"workflow run id {value} is out of range")
    return number


def _prefix_arg(value: str) -> str:
    """argparse type of --prefix: non-empty, without braces (they would move the hash tag)."""
    try:
        return check_prefix(value)
    except SwarmRedisError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--url, --prefix, --json, --cluster: on the main parser and (suppressed) on each command."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--url",
        default=default(None),
        help="Redis URL (default: $REDIS_URL, else an embedded server)",
    )
    parser.add_argument(
        "--prefix",
        type=_prefix_arg,
        default=default(None),
        help=f"key prefix of the runs (default: {DEFAULT_PREFIX}; non-empty, no braces)",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON for machines"
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        default=default(False),
        help="the URL is a Redis Cluster node",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``swarm-redis``."""
    parser = argparse.ArgumentParser(
        prog="swarm-redis",
        description="Inspect and operate swarm_redis workflow runs.",
        epilog="exit codes: 0 ok, 1 error, 2 usage, 3 run not found, 4 drift found, "
        "5 connection failed, 6 write refused (NOPERM)",
    )
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: dict[str, tuple[Callable[[Ctx], int], str]] = {
        "runs": (cmd_runs, "list the runs with status, task count and percent done"),
        "status": (cmd_status, "counts, queue, claims, limits, replicas and leader of a run"),
        "watch": (cmd_watch, "live progress of a run until it is final"),
        "tasks": (cmd_tasks, "list tasks of a run"),
        "task": (cmd_task, "one task: state, neighbours, queue/claim, why it is not running"),
        "events": (cmd_events, "the run's event stream"),
        "verify": (cmd_verify, "check (and --repair) the run's consistency"),
        "replicas": (cmd_replicas, "the run's replicas and leader"),
        "reap": (cmd_reap, "take over the claimed work of dead replicas"),
        "purge": (cmd_purge, "delete every key of a run"),
        "export": (cmd_export, "write a run to a JSON snapshot"),
        "import": (cmd_import, "load a run from a JSON snapshot"),
        "exporter": (cmd_exporter, "serve Prometheus metrics"),
    }
    subs: dict[str, argparse.ArgumentParser] = {}
    for name, (func, text) in commands.items():
        p = sub.add_parser(name, help=text, description=text)
        _global_options(p, top=False)
        p.set_defaults(func=func)
        subs[name] = p
    for name in (
        "status",
        "watch",
        "tasks",
        "task",
        "events",
        "verify",
        "replicas",
        "reap",
        "purge",
        "export",
    ):
        subs[name].add_argument("run", type=_run_arg, help="workflow run id (an integer)")
    subs["watch"].add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes"
    )
    subs["watch"].add_argument(
        "--count", type=int, default=0, help="stop after N refreshes (0: never)"
    )
    subs["tasks"].add_argument("--status", help="only tasks in this status (a letter)")
    subs["tasks"].add_argument("--array", type=int, help="only tasks of this array")
    subs["tasks"].add_argument("--limit", type=int, default=50, help="show at most N tasks")
    subs["task"].add_argument("task_id", type=int, help="task id")
    subs["events"].add_argument("--follow", "-f", action="store_true", help="wait for new events")
    subs["events"].add_argument("--since", help="only events after this stream id")
    subs["events"].add_argument("--count", type=int, help="stop after N events")
    subs["verify"].add_argument("--repair", action="store_true", help="fix the drift found")
    subs["verify"].add_argument("--chunk", type=int, default=500, help="repairs per script call")
    subs["verify"].add_argument("--examples", type=int, default=3, help="examples per drift kind")
    subs["purge"].add_argument("--yes", "-y", action="store_true", help="do not ask")
    subs["purge"].add_argument(
        "--force",
        action="store_true",
        help="purge even a live run (status not terminal, or a replica with a valid lease)",
    )
    subs["export"].add_argument("file", help="snapshot file to write ('-': stdout)")
    subs["import"].add_argument("file", help="snapshot file to read")
    subs["import"].add_argument(
        "--run",
        type=_run_arg,
        help="import as this run id (default: the snapshot's run_id, which must be an integer)",
    )
    subs["import"].add_argument(
        "--force", action="store_true", help="replace an existing run (atomically)"
    )
    subs["import"].add_argument(
        "--max-bytes",
        type=int,
        default=None,
        help="largest snapshot file to read (default: 1 GiB)",
    )
    subs["exporter"].add_argument("--port", type=int, required=True, help="HTTP port")
    subs["exporter"].add_argument(
        "--bind",
        "--host",
        "--addr",
        dest="addr",
        default="127.0.0.1",
        help="listen address (default: 127.0.0.1, this machine only; 0.0.0.0 listens on "
        "every interface: the metrics name runs and replicas, so expose them on purpose)",
    )
    subs["exporter"].add_argument(
        "--runs", nargs="*", type=_run_arg, help="run ids (default: every run)"
    )
    from swarm_redis.demo.cli import add_demo_parser  # the demo owns its Redis: see main()

    add_demo_parser(sub)
    _add_jobmon_replica(sub)
    # bench has options of its own (--json FILE): main() hands its argv over before parsing;
    # this entry only lists it in --help.
    sub.add_parser(
        "bench",
        add_help=False,
        help="benchmark suite (swarm-redis bench --help)",
    )
    return parser


def _add_jobmon_replica(sub: Any) -> None:
    """``jobmon-replica`` (swarm_redis.jobmon.cli): its own Redis client and jobmon server."""
    try:
        from swarm_redis.jobmon.cli import add_jobmon_replica_parser
    except ImportError as e:  # jobmon not installed: the subcommand says how to get it
        text = "serve a jobmon workflow run as one of N replicas (needs jobmon)"
        p = sub.add_parser("jobmon-replica", help=text, description=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(jobmon_missing=str(e))
        return
    add_jobmon_replica_parser(sub)


def _bench_argv(argv: Sequence[str]) -> list[str] | None:
    """The bench's own argv when the command is ``bench`` (a global --url is passed on)."""
    url: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "bench":
            return [*argv[i + 1 :], *url]
        if token in ("--url", "--prefix"):
            if token == "--url" and i + 1 < len(argv):
                url = ["--url", argv[i + 1]]
            i += 2
        elif token.startswith(("--url=", "--prefix=")) or token in ("--json", "--cluster"):
            if token.startswith("--url="):
                url = ["--url", token.split("=", 1)[1]]
            i += 1
        else:
            return None
    return None


# --- main -----------------------------------------------------------------------------------------


def _connect(args: argparse.Namespace) -> tuple[Any, Callable[[], None]]:
    url, embedded = resolve_url(args.url)
    if embedded is not None:
        print(
            f"swarm-redis: no --url and no REDIS_URL: using an empty embedded Redis ({embedded.backend})",
            file=sys.stderr,
        )
    client: Any
    if args.cluster:
        from redis.cluster import RedisCluster

        client = RedisCluster.from_url(url, protocol=3, socket_connect_timeout=5)
    else:
        client = redis.Redis.from_url(url, protocol=3, socket_connect_timeout=5)

    def close() -> None:
        with contextlib.suppress(Exception):
            client.close()
        if embedded is not None:
            embedded.stop()

    return client, close


def _console() -> Console:
    tty = sys.stdout.isatty()
    return Console(file=sys.stdout, width=None if tty else max(100, _columns()), soft_wrap=False)


def _columns() -> int:
    try:
        return int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        return 0


def _fail(code: int, message: str, as_json: bool) -> int:
    print(f"swarm-redis: {message}", file=sys.stderr)
    if as_json:
        sys.stdout.write(orjson.dumps({"error": message, "exit_code": code}).decode() + "\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    bench_argv = _bench_argv(argv)
    if bench_argv is not None:
        from swarm_redis.bench.cli import main as bench_main

        try:
            return bench_main(bench_argv)
        except SystemExit as e:  # --help (0) or a usage error (2)
            return int(e.code or 0)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return int(e.code or 0)
    if args.command == "demo":  # starts (and stops) its own Redis, server and replicas
        from swarm_redis.demo.cli import run_demo

        return run_demo(args)
    if args.command == "jobmon-replica":  # connects by itself (Redis and the jobmon server)
        if getattr(args, "jobmon_missing", None):
            print(f"swarm-redis jobmon-replica: {args.jobmon_missing}", file=sys.stderr)
            return EXIT_ERROR
        from swarm_redis.jobmon.cli import run_jobmon_replica_cli

        return run_jobmon_replica_cli(args)
    as_json = bool(args.json)
    try:
        client, close = _connect(args)
    except (redis.ConnectionError, SwarmRedisError, ValueError) as e:
        return _fail(EXIT_CONNECTION, f"cannot connect to Redis: {e}", as_json)
    ctx = Ctx(args=args, client=client, console=_console(), json=as_json)
    try:
        client.ping()
        code: int = args.func(ctx)
        return code
    except CliError as e:
        return _fail(e.code, e.message, as_json)
    except UnknownRunError as e:
        return _fail(EXIT_NOT_FOUND, str(e), as_json)
    except redis.exceptions.NoPermissionError as e:
        return _fail(
            EXIT_WRITE_REFUSED,
            f"write refused: Redis answered NOPERM ({e}); this user may not run that "
            "command (a read-only user can run runs, status, watch, tasks, task, events, "
            "replicas, export, verify without --repair, and the exporter)",
            as_json,
        )
    except (redis.ConnectionError, redis.TimeoutError) as e:
        return _fail(EXIT_CONNECTION, f"Redis connection failed: {e}", as_json)
    except SwarmRedisError as e:
        return _fail(EXIT_ERROR, str(e), as_json)
    except (redis.RedisError, OSError, ValueError) as e:  # e.g. a hand-edited, broken record
        return _fail(EXIT_ERROR, f"{type(e).__name__}: {e}", as_json)
    except KeyboardInterrupt:
        return 130
    finally:
        close()
