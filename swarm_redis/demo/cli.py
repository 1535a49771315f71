"""``swarm-redis demo``: several replica processes share one run, one is killed now and then,
and the run still finishes correctly.

The demo builds a synthetic DAG (several arrays with their own limits, several resource
shapes), registers it with :class:`~swarm_redis.state.RedisSwarmState`, starts the simulated
jobmon server (:mod:`swarm_redis.demo.sim`) and K replica OS processes
(``python -m swarm_redis.replica``), shows a live view, SIGKILLs a random replica every few
seconds and starts a replacement, and ends with a verdict checked from three independent
sides: Redis (every task final), the simulated server's record (no task queued twice for one
attempt, limits never exceeded) and the consistency checker (:func:`swarm_redis.ops.verify.find_drift`).

Without ``--url`` and ``REDIS_URL`` it uses :class:`~swarm_redis.demo.embedded.EmbeddedRedis`: a
private ``redis-server`` from PATH, else fakeredis's TCP server in this process (slower, no
persistence). Everything it starts (replicas, simulated server, private Redis, temp dir) is
stopped on exit, on Ctrl-C (SIGINT) and on SIGTERM.

``--role seed`` and ``--role sim`` run single parts for docker-compose: register the DAG and
exit; or serve the simulated server for a registered run until it is final, then print the
verdict.

This module parses the options and turns the outcome into an exit status; the parts live in
:mod:`~swarm_redis.demo.dag`, :mod:`~swarm_redis.demo.pool`, :mod:`~swarm_redis.demo.view`,
:mod:`~swarm_redis.demo.verdict` and :mod:`~swarm_redis.demo.run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import redis

from swarm_redis.demo.dag import SHAPES
from swarm_redis.demo.embedded import EmbeddedRedisError
from swarm_redis.demo.run import Demo, Settings, Terminated, sigterm_unwinds
from swarm_redis.demo.verdict import DemoResult, verdict_text
from swarm_redis.errors import SwarmRedisError
from swarm_redis.exit_codes import (
    EXIT_CONNECTION,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
)

__all__ = ["ROLES", "add_demo_parser", "main", "run_demo"]

#: Parts of the demo ``--role`` can run alone (docker-compose runs them as services).
ROLES: tuple[str, ...] = ("all", "seed", "sim")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        tasks=int(args.tasks),
        replicas=int(args.replicas),
        kill_every=float(args.kill_every),
        shape=str(args.shape),
        fail_rate=float(args.fail_rate),
        limit=int(args.limit),
        seed=args.seed,
        url=getattr(args, "url", None),
        prefix=getattr(args, "prefix", None) or "swarm",
        run=args.run,
        json=bool(getattr(args, "json", False)),
        timeout=float(args.timeout),
        purge=bool(args.purge),
        role=str(args.role),
        listen=str(args.listen),
        max_attempts=int(args.max_attempts),
    )


def _check(s: Settings) -> str | None:
    if s.tasks < 1:
        return "--tasks must be >= 1"
    if s.replicas < 1:
        return "--replicas must be >= 1"
    if s.kill_every < 0 or s.timeout <= 0:
        return "--kill-every must be >= 0 and --timeout > 0"
    if not 0.0 <= s.fail_rate <= 1.0:
        return "--fail-rate must be between 0 and 1"
    if s.limit < 1:
        return "--limit must be >= 1"
    if s.max_attempts < 1:
        return "--max-attempts must be >= 1"
    if s.run is not None and s.run < 0:
        return "--run must be >= 0"
    return None


def run_demo(args: argparse.Namespace) -> int:
    """Run ``swarm-redis demo`` with parsed arguments; the exit status (0: every check passed).

    Exit statuses: 0 passed, 1 a check failed (or an error), 2 bad usage, 5 Redis unreachable,
    130 interrupted (SIGINT), 143 terminated (SIGTERM).
    """
    if getattr(args, "jobmon", False):
        from swarm_redis.jobmon.demo import run_jobmon_demo  # needs jobmon

        return run_jobmon_demo(args)
    s = _settings(args)
    problem = _check(s)
    if problem is not None:
        print(f"swarm-redis demo: {problem}", file=sys.stderr)
        return EXIT_USAGE
    # With --json, stdout carries only the final JSON line; humans read stderr.
    human = sys.stderr if s.json else sys.stdout

    def say(text: str) -> None:
        print(text, file=human, flush=True)

    demo = Demo(s, say, human)
    box: list[DemoResult] = []
    code = EXIT_FAILED
    error = ""
    try:
        with sigterm_unwinds():
            try:
                if s.role == "seed":
                    code = demo.run_seed()
                elif s.role == "sim":
                    code = demo.run_sim(box)
                else:
                    code = demo.run_all(box)
            finally:
                demo.cleanup()
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
        if box:
            box[0].interrupted = True
        say("interrupted: replicas, simulated server and private Redis stopped")
    except Terminated:
        code = EXIT_TERMINATED
        if box:
            box[0].interrupted = True
        say("terminated: replicas, simulated server and private Redis stopped")
    except (redis.ConnectionError, redis.TimeoutError, EmbeddedRedisError) as e:
        code, error = EXIT_CONNECTION, f"cannot reach Redis: {e}"
    except (redis.RedisError, SwarmRedisError, OSError) as e:
        code, error = EXIT_FAILED, f"{type(e).__name__}: {e}"
    if error:
        say(f"swarm-redis demo: {error}")
    if box:
        result = box[0]
        result.error = error
        say(verdict_text(result))
        if s.json:
            print(json.dumps(result.to_json(), sort_keys=True), flush=True)
    elif s.json and error:
        print(json.dumps({"error": error, "exit_code": code}), flush=True)
    return code


def add_demo_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` command to the CLI's subparsers; returns its parser.

    ``--url``, ``--prefix`` and ``--json`` default to "not given" (SUPPRESS), so the CLI's
    global options of the same names keep their values when given before ``demo``.
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="several replicas share a run, one is killed every few seconds; verdict at the end",
        description="Several replica processes share one run; a random one is SIGKILLed every "
        "few seconds and replaced; the run still finishes, and a verdict checks it from Redis, "
        "the simulated server's record and the consistency checker. Exit status 0 when every "
        "check passed, 1 when one failed, 130 on Ctrl-C.",
    )
    p.add_argument(
        "--jobmon",
        action="store_true",
        help="run a real jobmon workflow on a local jobmon server instead (needs jobmon; "
        "see docs/jobmon.md, Install)",
    )
    p.add_argument("--tasks", type=int, default=3000, help="number of tasks (default 3000)")
    p.add_argument("--replicas", type=int, default=3, help="replica processes (default 3)")
    p.add_argument(
        "--kill-every",
        type=float,
        default=4.0,
        metavar="S",
        help="SIGKILL a random replica every S seconds and start another (the first one at "
        "30%% done at the latest); 0: never (default 4)",
    )
    p.add_argument("--shape", choices=SHAPES, default="layered", help="DAG shape (default layered)")
    p.add_argument(
        "--fail-rate",
        type=float,
        default=0.05,
        metavar="P",
        help="share of task runs that fail on the simulated server (default 0.05)",
    )
    p.add_argument("--limit", type=int, default=200, help="workflow limit (default 200)")
    p.add_argument(
        "--max-attempts",
        type=int,
        default=4,
        help="a task failing this many times is ERROR_FATAL; its downstreams never run (4)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (DAG, server, kills)")
    p.add_argument("--run", type=int, default=None, help="workflow run id (default: random)")
    p.add_argument(
        "--timeout", type=float, default=300.0, help="give up after this many seconds (300)"
    )
    p.add_argument(
        "--purge", action="store_true", help="delete the run's keys at the end (with --url)"
    )
    p.add_argument(
        "--role",
        choices=ROLES,
        default="all",
        help="all (default); seed: register the DAG and exit; sim: serve the simulated server "
        "for a registered run until it is final (docker-compose)",
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1:7000",
        metavar="HOST:PORT",
        help="address of the simulated server with --role sim (default 127.0.0.1:7000; listen "
        "elsewhere only on a private network, with SWARM_SIM_AUTHKEY set to a key of your own)",
    )
    p.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help="Redis URL (default: REDIS_URL, else a private redis-server, else fakeredis)",
    )
    p.add_argument("--prefix", default=argparse.SUPPRESS, help="key prefix (default swarm)")
    p.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the verdict as one JSON object on the last line of stdout",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m swarm_redis.demo``: the demo without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="swarm-redis")
    add_demo_parser(parser.add_subparsers(dest="command", required=True))
    return run_demo(parser.parse_args(["demo", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    sys.exit(main())
