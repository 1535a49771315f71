"""``swarm-redis``: look at and operate runs from a shell (also ``python -m swarm_redis``).

This module holds the argument parser and :func:`main`; the commands are in
:mod:`swarm_redis.ops.handlers`. Output is rich tables (colour only on a terminal; piped output
is never wrapped, so ``| grep`` sees whole lines) or, with ``--json``, JSON for machines.

The Redis URL comes from ``--url``, else ``REDIS_URL``, else a throw-away embedded server (empty;
handy only to try the tool). Read commands (runs, status, watch, tasks, task, events, replicas,
verify without --repair, export, exporter) use plain read commands only, so a read-only ACL user
can run them.

RUN is always an integer and --prefix a non-empty string without braces, and every SCAN pattern
escapes the prefix (keys.glob_escape), so no argument can reach another run. ``purge`` deletes
the run's key-table names only (no pattern) and refuses a live run (status not terminal, or a
replica lease still valid by Redis's clock) unless --force. ``import`` checks the whole file
first (snapshot.validate_snapshot), takes the prefix from --prefix (never from the file), and
moves the keys into place in one transaction. The exporter listens on 127.0.0.1 unless --bind,
and starts whether or not Redis answers (a scrape while it is down reports ``swarm_up 0``).

``events``: every kept event, oldest first; ``--count N`` the first N (oldest, or after
``--since ID``), ``--last N`` the latest N; ``--follow`` then waits for new ones and, without
``--since`` or ``--last``, starts at the end. ``watch --interval S`` pauses S seconds between
refreshes, at least :data:`~swarm_redis.ops.handlers.MIN_INTERVAL` (so 0 does not spin).

Exit codes (:mod:`swarm_redis.exit_codes`):
    0   EXIT_OK              done; verify found no drift
    1   EXIT_ERROR           any other error (bad snapshot file, import onto an existing run,
                             purge of a live run without --force, a run changed during purge ...)
    2   EXIT_USAGE           bad arguments (RUN not an integer, bad --prefix, --since,
                             --interval ...); purge without --yes when stdin is not a terminal
    3   EXIT_NOT_FOUND       the run (or the task) does not exist
    4   EXIT_DRIFT           verify found drift (after --repair: drift is left)
    5   EXIT_CONNECTION      Redis could not be reached (or refused the credentials, or
                             --cluster names a node that is not in a cluster)
    6   EXIT_WRITE_REFUSED   Redis answered NOPERM: a write this ACL user may not make, or a
                             read outside its key pattern (the message says which)
    141 EXIT_PIPE_CLOSED     stdout was closed early (``... | head``): the command stops
                             quietly, as tools ended by SIGPIPE do
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import redis
from rich.console import Console

from swarm_redis.demo.embedded import EmbeddedRedis, resolve_url
from swarm_redis.engine.keys import check_prefix
from swarm_redis.errors import SwarmRedisError, UnknownRunError
from swarm_redis.exit_codes import (
    EXIT_CONNECTION,
    EXIT_DRIFT,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PIPE_CLOSED,
    EXIT_USAGE,
    EXIT_WRITE_REFUSED,
)
from swarm_redis.ops.events import check_stream_id
from swarm_redis.ops.handlers import DEFAULT_PREFIX, HANDLERS, MIN_INTERVAL, CliError, Ctx, writes
from swarm_redis.ops.verify import REPAIR_CHUNK_MAX

__all__ = [
    "EXIT_CONNECTION",
    "EXIT_DRIFT",
    "EXIT_ERROR",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_PIPE_CLOSED",
    "EXIT_USAGE",
    "EXIT_WRITE_REFUSED",
    "build_parser",
    "main",
]

#: Width of the console when stdout is not a terminal: wide enough that no line wraps.
PIPE_WIDTH = 10_000


_INT64_MAX = (1 << 63) - 1


def _run_arg(value: str) -> int:
    """argparse type of RUN: a decimal integer, so no run id can be a pattern or a key part."""
    digits = value[1:] if value.startswith("-") else value
    if not digits or not digits.isascii() or not digits.isdigit():
        raise argparse.ArgumentTypeError(f"workflow run id must be an integer, got {value!r}")
    if len(digits) > 19 or abs(int(value)) > _INT64_MAX:  # (length first: int() of a huge str)
        raise argparse.ArgumentTypeError(f"workflow run id {value} is out of range (int64)")
    return int(value)


#: Longest ``watch --interval`` (a day): time.sleep overflows on huge values.
MAX_INTERVAL = 86_400.0


def _interval_arg(value: str) -> float:
    """argparse type of --interval: seconds, a finite number in 0..MAX_INTERVAL."""
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not math.isfinite(number) or not 0 <= number <= MAX_INTERVAL:
        raise argparse.ArgumentTypeError(
            f"interval must be a number of seconds from 0 to {MAX_INTERVAL:g}, got {value!r}"
        )
    return number


def _count_arg(least: int, most: int | None = None) -> Callable[[str], int]:
    """argparse type of a count: an integer >= ``least`` (and <= ``most``)."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if number < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {number}")
        if most is not None and number > most:
            raise argparse.ArgumentTypeError(f"must be at most {most}, got {number}")
        return number

    return parse


def _since_arg(value: str) -> str:
    """argparse type of --since: an event id as ``events`` prints it."""
    try:
        return check_stream_id(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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
        "5 connection failed, 6 refused by an ACL (NOPERM), 141 stdout closed early",
    )
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subs: dict[str, argparse.ArgumentParser] = {}
    for name, (func, text, _) in HANDLERS.items():
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
        "--interval",
        type=_interval_arg,
        default=1.0,
        help=f"seconds between refreshes (default 1; at least {MIN_INTERVAL}, also for 0)",
    )
    subs["watch"].add_argument(
        "--count", type=_count_arg(0), default=0, help="stop after N refreshes (0: never)"
    )
    subs["tasks"].add_argument("--status", help="only tasks in this status (a letter)")
    subs["tasks"].add_argument("--array", type=int, help="only tasks of this array")
    subs["tasks"].add_argument(
        "--limit", type=_count_arg(1), default=50, help="show at most N tasks"
    )
    subs["task"].add_argument("task_id", type=int, help="task id")
    subs["events"].add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="wait for new events; starts at the end unless --since or --last",
    )
    subs["events"].add_argument(
        "--since", type=_since_arg, help="only events after this id (<ms>-<seq> or <ms>)"
    )
    which = subs["events"].add_mutually_exclusive_group()
    which.add_argument(
        "--count",
        type=_count_arg(1),
        help="the first N events (oldest kept, or after --since), then stop",
    )
    which.add_argument("--last", type=_count_arg(1), help="the latest N events")
    subs["verify"].add_argument("--repair", action="store_true", help="fix the drift found")
    subs["verify"].add_argument(
        "--chunk",
        type=_count_arg(1, REPAIR_CHUNK_MAX),
        default=500,
        help=f"repairs per script call (1 to {REPAIR_CHUNK_MAX})",
    )
    subs["verify"].add_argument(
        "--examples", type=_count_arg(0), default=3, help="examples per drift kind"
    )
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
        type=_count_arg(0),
        default=None,
        help="largest snapshot file to read (default: 1 GiB)",
    )
    subs["exporter"].add_argument(
        "--port", type=_count_arg(0, 65535), required=True, help="HTTP port (0-65535)"
    )
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


# --- main ---------------------------------------------------------------------------------------


class _Connection:
    """The Redis client, made on first use (the exporter starts before Redis is up)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client: Any = None
        self.embedded: EmbeddedRedis | None = None

    def get(self) -> Any:
        if self.client is None:
            self.client = self._make()
        return self.client

    def _make(self) -> Any:
        if self.embedded is None:
            url, self.embedded = resolve_url(self.args.url)
            if self.embedded is not None:
                print(
                    "swarm-redis: no --url and no REDIS_URL: using an empty embedded Redis "
                    f"({self.embedded.backend})",
                    file=sys.stderr,
                )
        else:
            url = self.embedded.url
        if not self.args.cluster:
            return redis.Redis.from_url(url, protocol=3, socket_connect_timeout=5)
        from redis.cluster import RedisCluster

        try:
            return RedisCluster.from_url(url, protocol=3, socket_connect_timeout=5)
        except redis.exceptions.RedisClusterException as e:
            if "cluster mode is not enabled" in str(e).lower():
                raise CliError(
                    EXIT_CONNECTION,
                    "--cluster: the node is not part of a Redis Cluster (cluster mode is not "
                    "enabled there); leave out --cluster",
                ) from None
            raise CliError(EXIT_CONNECTION, f"cannot connect to the Redis Cluster: {e}") from None

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
        if self.embedded is not None:
            self.embedded.stop()


class _Console(Console):
    """A rich console that leaves a closed stdout to :func:`main` (rich alone exits with 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def _console() -> Console:
    """Rich output on a terminal; on a pipe, no colour and no wrapping (PIPE_WIDTH)."""
    if sys.stdout.isatty():
        return _Console(file=sys.stdout, soft_wrap=False)
    return _Console(file=sys.stdout, width=PIPE_WIDTH, soft_wrap=False)


def _fail(code: int, message: str, as_json: bool) -> int:
    print(f"swarm-redis: {message}", file=sys.stderr)
    if as_json:
        sys.stdout.write(orjson.dumps({"error": message, "exit_code": code}).decode() + "\n")
        sys.stdout.flush()
    return code


def _refused(args: argparse.Namespace, error: Exception) -> str:
    """The message for NOPERM: a refused read, or a refused write, and what to do."""
    what = str(error)
    if not writes(args):
        prefix = args.prefix or DEFAULT_PREFIX
        if "key" in what.lower():
            return (
                f"read refused: Redis answered NOPERM ({what}); this user's ACL key pattern "
                f"does not cover the keys under prefix {prefix!r} (it needs ~{prefix}:*)"
            )
        return f"read refused: Redis answered NOPERM ({what}); this user may not run that read"
    return (
        f"write refused: Redis answered NOPERM ({what}); this user may not run that "
        "command (a read-only user can run runs, status, watch, tasks, task, events, "
        "replicas, export, verify without --repair, and the exporter)"
    )


def _stdout_closed() -> int:
    """The reader of stdout went away: point stdout at /dev/null (no error at exit), stop."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_PIPE_CLOSED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring)."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        return _stdout_closed()


def parse_command_line(argv: Sequence[str]) -> argparse.Namespace:
    """The parsed command line (SystemExit on --help or a usage error). Without jobmon
    installed, ``jobmon-replica`` takes any arguments, so that it can say how to get jobmon."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "jobmon_missing", None):
        parser.parse_args(argv)  # the usage error
    return args


def _main(argv: list[str]) -> int:
    bench_argv = _bench_argv(argv)
    if bench_argv is not None:
        from swarm_redis.bench.cli import main as bench_main

        try:
            return bench_main(bench_argv)
        except SystemExit as e:  # --help (0) or a usage error (2)
            return int(e.code or 0)
    try:
        args = parse_command_line(argv)
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
    connection = _Connection(args)
    ctx = Ctx(args=args, connect=connection.get, console=_console(), json=as_json)
    try:
        if HANDLERS[args.command][2]:
            ctx.client.ping()
        code: int = args.func(ctx)
        return code
    except BrokenPipeError:
        raise
    except CliError as e:
        return _fail(e.code, e.message, as_json)
    except UnknownRunError as e:
        return _fail(EXIT_NOT_FOUND, str(e), as_json)
    except redis.exceptions.NoPermissionError as e:
        return _fail(EXIT_WRITE_REFUSED, _refused(args, e), as_json)
    except (redis.ConnectionError, redis.TimeoutError) as e:
        return _fail(EXIT_CONNECTION, f"Redis connection failed: {e}", as_json)
    except SwarmRedisError as e:
        return _fail(EXIT_ERROR, str(e), as_json)
    except (redis.RedisError, OSError, ValueError) as e:  # e.g. a hand-edited, broken record
        return _fail(EXIT_ERROR, f"{type(e).__name__}: {e}", as_json)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        connection.close()
