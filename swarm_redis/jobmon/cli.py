"""``swarm-redis jobmon-replica``: one replica of a jobmon workflow run, as a process.

Run one per host (or several per host); each builds jobmon's task objects from the jobmon
server's database (jobmon's config says where it is: ``JOBMON__HTTP__SERVICE_URL`` ...), shares
or attaches to the run's state in Redis, and serves the run until it ends. SIGTERM leaves the
run cleanly (the others carry on); SIGKILL is healed by the others (leases, re-drive).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

from swarm_redis.replica.process import BATCH_SIZE_HELP, batch_size_arg


def add_jobmon_replica_parser(sub: Any) -> None:
    """Add the ``jobmon-replica`` subcommand to the CLI's subparsers."""
    text = "serve a jobmon workflow run as one of N replicas sharing Redis (needs jobmon)"
    p = sub.add_parser("jobmon-replica", help=text, description=text)
    p.add_argument("--run", type=int, required=True, help="jobmon workflow run id")
    p.add_argument(
        "--url",
        default=os.environ.get("REDIS_URL"),
        help="Redis URL of the shared state (default $REDIS_URL)",
    )
    p.add_argument("--prefix", default="swarm", help="key prefix of the run")
    p.add_argument(
        "--workflow-id",
        type=int,
        default=None,
        help="jobmon workflow id (read from Redis when the run is already shared)",
    )
    p.add_argument("--replica-id", default=None, help="replica name (default host-pid-random)")
    p.add_argument("--ttl", type=float, default=10.0, help="lease length in seconds")
    p.add_argument("--batch-size", type=batch_size_arg, default=500, help=BATCH_SIZE_HELP)
    p.add_argument("--poll", type=float, default=0.1, help="idle pause (s)")
    p.add_argument("--sync", type=float, default=None, help="leader sync period (s)")
    p.add_argument("--reconcile", type=float, default=30.0, help="reconcile period (s)")
    p.add_argument("--fail-fast", action="store_true", help="end the run at the first failure")
    p.add_argument("--timeout", type=int, default=36000, help="run timeout (s)")
    p.add_argument("--distributor-log", default=None, help="file for the distributor's output")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON line")


def _outcome_json(outcome: Any) -> str:
    r = outcome.result
    return json.dumps(
        {
            "final_status": r.final_status,
            "total_tasks": r.total_tasks,
            "done_count": r.done_count,
            "failed_count": r.failed_count,
            "num_previously_complete": r.num_previously_complete,
            "registered": outcome.registered,
            "distributors_started": outcome.distributors_started,
            "server_calls": outcome.server_calls,
            "replica": dataclasses.asdict(outcome.replica),
        }
    )


def run_jobmon_replica_cli(args: argparse.Namespace) -> int:
    """The subcommand's body; exit code 0 when the run ended (whatever its status)."""
    if not args.url:
        print("swarm-redis jobmon-replica: --url (or $REDIS_URL) is required", file=sys.stderr)
        return 2
    try:
        import jobmon.client  # noqa: F401
    except ImportError:
        print(
            "swarm-redis jobmon-replica: jobmon is not installed (pip install "
            "jobmon 3.6 from its source: see the README, 'Use with jobmon')",
            file=sys.stderr,
        )
        return 1
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s jobmon-replica[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    from swarm_redis.jobmon.run import run_replica_of

    # jobmon logs to stdout: keep stdout for the result alone, send everything else to stderr
    # (a parent reading only the result must never block this process on a full pipe)
    sys.stdout.flush()
    result_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    config = None
    if args.fail_fast:
        from jobmon.client.swarm import WorkflowRunConfig

        config = WorkflowRunConfig(fail_fast=True)
    kwargs: dict[str, Any] = {}
    if args.sync is not None:
        kwargs["sync_s"] = args.sync
    outcome = run_replica_of(
        args.run,
        redis_url=args.url,
        workflow_id=args.workflow_id,
        prefix=args.prefix,
        config=config,
        timeout=args.timeout,
        stop=stop,
        ttl_s=args.ttl,
        batch_size=args.batch_size,
        poll_s=args.poll,
        reconcile_s=args.reconcile,
        replica_id=args.replica_id,
        distributor_log=args.distributor_log,
        **kwargs,
    )
    if args.json:
        print(_outcome_json(outcome), file=result_out, flush=True)
    else:
        r = outcome.result
        print(
            f"run {args.run}: {r.final_status} ({r.done_count}/{r.total_tasks} done, "
            f"{r.failed_count} failed)",
            file=result_out,
            flush=True,
        )
    result_out.close()
    return 0
