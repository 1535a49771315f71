"""The commands of ``swarm-redis``: one function per command, given the parsed arguments.

Each handler reads through :mod:`swarm_redis.ops.reads`, :mod:`swarm_redis.ops.tasks`,
:mod:`swarm_redis.ops.events`, :mod:`swarm_redis.ops.verify` or
:mod:`swarm_redis.ops.snapshot`, prints through :mod:`swarm_redis.ops.render` (or JSON with
``--json``) and returns an exit code of :mod:`swarm_redis.exit_codes`. Failures it can name
raise :class:`CliError`; :func:`swarm_redis.ops.cli.main` turns every other error into one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from rich.console import Console, RenderableType
from rich.live import Live

from swarm_redis.constants import TASK_STATUSES
from swarm_redis.engine.keys import RunKeys
from swarm_redis.errors import UnknownRunError
from swarm_redis.exit_codes import EXIT_DRIFT, EXIT_ERROR, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from swarm_redis.ops import render
from swarm_redis.ops.events import Event, follow_events, format_event, read_events, read_last_events
from swarm_redis.ops.reads import RunSnapshot, list_runs, read_liveness, read_snapshot
from swarm_redis.ops.tasks import list_tasks, task_detail

__all__ = ["DEFAULT_PREFIX", "HANDLERS", "MIN_INTERVAL", "CliError", "Ctx", "writes"]

DEFAULT_PREFIX = "swarm"
#: Shortest pause between two refreshes of ``watch`` (``--interval 0`` means this, not a spin).
MIN_INTERVAL = 0.1


class CliError(Exception):
    """A failure with its exit code and the message for stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass
class Ctx:
    """What every command gets: parsed args, the client (made on first use), the console."""

    args: argparse.Namespace
    connect: Callable[[], Any]
    console: Console
    json: bool

    @property
    def client(self) -> Any:
        return self.connect()

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

    def line(self, text: str) -> None:
        """One plain line, never wrapped (no markup, no highlighting)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)


def writes(args: argparse.Namespace) -> bool:
    """True for the commands that write to Redis (the others need read permissions only)."""
    if args.command == "verify":
        return bool(args.repair)
    return args.command in ("reap", "purge", "import")


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
    """Snapshots every ``--interval`` s (at least MIN_INTERVAL) with the completion rate,
    until the run is final or ``--count`` refreshes were shown."""
    keys = ctx.keys()
    pause = max(MIN_INTERVAL, ctx.args.interval)
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
        time.sleep(pause)


def cmd_watch(ctx: Ctx) -> int:
    if ctx.json:
        for snap, rate in _watch_frames(ctx):
            ctx.emit_line({**snap.to_json(), "rate": rate})
    elif not ctx.console.is_terminal:
        for snap, rate in _watch_frames(ctx):
            ctx.line(render.watch_line(snap, rate))
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
    """Kept events, then (``--follow``) new ones.

    ``--count N``: the first N (oldest kept, or after ``--since``; with ``--follow``, new ones
    count too). ``--last N``: the latest N. ``--follow`` alone starts at the end (only new
    events); with ``--since`` or ``--last`` it prints those first, then follows.
    """
    keys = _require_run(ctx)
    args = ctx.args
    limit: int | None = args.count
    backlog: Iterator[Event] | list[Event]
    if args.last is not None:
        backlog = read_last_events(ctx.client, keys, args.last, since=args.since)
    elif args.follow and args.since is None:
        backlog = []
    else:
        backlog = read_events(ctx.client, keys, since=args.since, count=limit)

    def out(event: Event) -> None:
        if ctx.json:
            ctx.emit_line(event.to_json())
        else:
            ctx.line(format_event(event))

    shown = 0
    last: str | None = args.since
    for event in backlog:
        out(event)
        shown += 1
        last = event.id
    if not args.follow or (limit is not None and shown >= limit):
        return EXIT_OK
    for new in follow_events(ctx.client, keys, after="$" if last is None else last):
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
            ctx.line("after repair:")
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
    report = state.reap(force=True)
    if ctx.json:
        ctx.emit(dataclasses.asdict(report))
    else:
        ctx.line(render.reap_summary(str(keys.run_id), report))
    return EXIT_OK


def _confirm(question: str) -> bool:
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_purge(ctx: Ctx) -> int:
    """Delete the run's own keys (the key table's names, no pattern), refusing a live run."""
    from swarm_redis.ops.purge import describe_liveness, refusal, unlink_run
    from swarm_redis.ops.snapshot import run_keys_present

    keys = ctx.keys()
    force = bool(ctx.args.force)
    found = run_keys_present(ctx.client, keys)
    if not found:
        raise UnknownRunError(
            f"workflow run {keys.run_id} has no keys under prefix {keys.prefix!r}"
        )
    life = read_liveness(ctx.client, keys)
    described = describe_liveness(life)
    refused = refusal(keys, life)
    if refused is not None and not force:
        raise CliError(EXIT_ERROR, refused)
    live_note = " IT IS LIVE (--force)." if life.live else ""
    if not ctx.args.yes:
        if not sys.stdin.isatty():
            raise CliError(
                EXIT_USAGE,
                f"refusing to purge run {keys.run_id} ({len(found)} keys; {described}) "
                "without --yes: stdin is not a terminal",
            )
        if not _confirm(
            f"delete all {len(found)} keys of run {keys.run_id} under {keys.prefix!r} "
            f"({described})?{live_note}"
        ):
            ctx.line("purge cancelled")
            return EXIT_ERROR
    elif life.live:
        print(f"swarm-redis: purging a live run (--force): {described}", file=sys.stderr)
    deleted = unlink_run(ctx.client, keys, check_liveness=not force)
    if ctx.json:
        ctx.emit(
            {
                "run_id": str(keys.run_id),
                "prefix": keys.prefix,
                "deleted": deleted,
                "run_status": life.run_status,
                "live": life.live,
                "live_replicas": [r.replica_id for r in life.live_replicas],
                "forced": force,
            }
        )
    else:
        ctx.line(f"deleted {deleted} keys of run {keys.run_id} ({described}){live_note}")
    return EXIT_OK


def cmd_export(ctx: Ctx) -> int:
    from swarm_redis.ops.snapshot import export_run, save_snapshot

    snap = export_run(ctx.client, ctx.keys())
    if ctx.args.file == "-":
        sys.stdout.write(orjson.dumps(snap).decode() + "\n")
        sys.stdout.flush()
        return EXIT_OK
    save_snapshot(snap, ctx.args.file)
    n = len(snap["keys"])
    if ctx.json:
        ctx.emit({"run_id": snap["run_id"], "file": ctx.args.file, "keys": n})
    else:
        ctx.line(f"exported run {snap['run_id']}: {n} keys to {ctx.args.file}")
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
        ctx.line(f"imported run {keys.run_id} under prefix {keys.prefix!r}: {n} keys")
    return EXIT_OK


def cmd_exporter(ctx: Ctx) -> int:
    """Serve metrics; Redis is reached on each scrape, so it may be down at start."""
    try:
        from swarm_redis.ops.exporter import serve
    except ImportError as e:
        raise CliError(
            EXIT_ERROR,
            "the exporter needs prometheus-client: install the 'prometheus' extra, e.g. "
            f"pip install '.[prometheus]' in a checkout ({e})",
        ) from None
    runs = [str(r) for r in ctx.args.runs] if ctx.args.runs else None
    print(f"serving metrics on http://{ctx.args.addr}:{ctx.args.port}/metrics", file=sys.stderr)
    serve(
        None, ctx.args.port, addr=ctx.args.addr, prefix=ctx.prefix, runs=runs, connect=ctx.connect
    )
    return EXIT_OK


#: Command name -> (handler, help text, whether Redis is pinged before it runs).
HANDLERS: dict[str, tuple[Callable[[Ctx], int], str, bool]] = {
    "runs": (cmd_runs, "list the runs with status, task count and percent done", True),
    "status": (cmd_status, "counts, queue, claims, limits, replicas and leader of a run", True),
    "watch": (cmd_watch, "live progress of a run until it is final", True),
    "tasks": (cmd_tasks, "list tasks of a run", True),
    "task": (cmd_task, "one task: state, neighbours, queue/claim, why it is not running", True),
    "events": (cmd_events, "the run's event stream", True),
    "verify": (cmd_verify, "check (and --repair) the run's consistency", True),
    "replicas": (cmd_replicas, "the run's replicas and leader", True),
    "reap": (cmd_reap, "take over the claimed work of dead replicas", True),
    "purge": (cmd_purge, "delete every key of a run", True),
    "export": (cmd_export, "write a run to a JSON snapshot", True),
    "import": (cmd_import, "load a run from a JSON snapshot", True),
    "exporter": (cmd_exporter, "serve Prometheus metrics (starts while Redis is down)", False),
}
